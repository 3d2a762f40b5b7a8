import math

from mdl_slt.llc.calibrate import Setting, recommend


def setting(step, n_beta, llc, stable=True):
    return Setting(step, n_beta, llc, 0.1, 1.0, 0.0, 0, stable, [])


def test_recommends_the_largest_step_on_the_plateau():
    sweep = [setting(1e-5, 30, 20.0, stable=False), setting(3e-5, 30, 40.0), setting(1e-4, 30, 42.0),
             setting(3e-4, 30, 43.5), setting(1e-3, 30, 60.0), setting(3e-3, 30, math.nan, stable=False)]
    chosen = recommend(sweep, n_betas=(30,))
    assert (chosen.step_size, chosen.llc_mean) == (3e-4, 43.5)  # 1e-3 jumps by 38%: discretization bias


def test_prefers_n_beta_in_order_and_skips_unstable_ones():
    sweep = [setting(1e-4, 30, 40.0, stable=False), setting(1e-4, 10, 14.0), setting(3e-4, 10, 14.5)]
    chosen = recommend(sweep, n_betas=(30, 10))
    assert (chosen.n_beta, chosen.step_size) == (10, 3e-4)
    assert recommend([setting(1e-4, 30, 1.0, stable=False)], n_betas=(30,)) is None


def test_a_diverged_setting_is_unstable_and_any_other_error_is_the_users_to_see():
    """Every chain diverging is a result of the sweep (that setting is unstable); a glob matching no
    parameter or a bad setting is the user's mistake, told as it is, not as 'no stable setting'."""
    import pytest

    from mdl_slt.errors import UserError
    from mdl_slt.llc.calibrate import run_sweep
    from mdl_slt.llc.config import LLCConfig
    from tests.conftest import regression

    model, data, _ = regression()
    base = LLCConfig(num_chains=2, num_draws=30, num_burnin=0, batch_size=100, localization=0.0)
    swept = run_sweep(model, data, base, step_sizes=(10.0,), n_betas=(30.0,))
    assert [(s.stable, s.diverged, math.isnan(s.llc_mean)) for s in swept] == [(False, 2, True)]
    with pytest.raises(UserError, match="no parameter matches"):
        run_sweep(model, data, base.model_copy(update={"parameters": ["nothing.*"]}), step_sizes=(1e-4,),
                  n_betas=(30.0,))
    with pytest.raises(UserError, match="needs localization > 0"):
        run_sweep(model, data, base.model_copy(update={"sampler": "baoab"}), step_sizes=(1e-4,), n_betas=(30.0,))
