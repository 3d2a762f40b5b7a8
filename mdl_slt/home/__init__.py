"""Where mdl-slt keeps what it builds once and reuses, and how it writes there.

    paths   the home (`$MDL_SLT_HOME`, else ~/.cache/mdl-slt) and the hub-cache folder under it
    files   writes safe when processes race: a temporary file renamed atomically, or a lock
    hub     the Hugging Face hub-cache layout (snapshots, revisions) and whether the hub answers

May import: errors.
"""
