"""Where results live: one SQLite file per experiment, a tidy row per measurement.

    keys      task and row keys, built here and nowhere else
    records   the columns of a row, the other tables, and `Record`
    database  `Store`, the one writer: a task's rows, state and trace in one transaction
    claims    leases on units, so processes sharing a store share its work

May import: errors.
"""
