"""What an experiment asks for, before anything runs: the file's schema, the units and the tasks
they owe the store, keyed by what each depends on, and what they can cost.

    experiment  the experiment file: one pydantic schema, `--set` overrides, one-line errors
    units       one unit per checkpoint, with the identity of its bytes; the device resolved
    tasks       each unit's tasks and the settings each task's config hash covers
    cost        the most SGLD steps and loss evaluations the units can take

May import: errors, home, compute, data, models, store, llc, measures.
"""
