"""What is measured: checkpoints named `MODEL_ID@REVISION` (or a local directory), and the embedded
suite that stands in for Pythia offline.

    pythia       Pythia's sizes, revisions, step sizes and tokenizer
    revisions    a revision's name → training step and tokens seen
    spec         the suite's runs, settings, schedule and configurations (no weights needed)
    checkpoints  the one loader (suite cache, user cache, hub), a checkpoint's identity and layout
    suite        training the suite into the hub-cache layout, once

May import: errors, progress, home, data, compressors (the weight groups of a layout).
"""
