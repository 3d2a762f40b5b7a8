import math

from mdl_slt.calibrate import Setting, recommend


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
