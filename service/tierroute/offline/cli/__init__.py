"""The offline subcommands of `tierroute`: `modelling` (train, eval, calibrate) and
`operations` (report, audit, drift, retrain, rollback, models). `__main__` imports a module
only when one of its subcommands runs.
"""
