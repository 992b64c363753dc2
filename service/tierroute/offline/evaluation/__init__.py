"""Offline evaluation and calibration on recorded outcomes: the cost-quality frontier.

`tierroute eval` answers every record of a recorded-outcome file with every strategy through
the server's own router and cascade engine, over the replay backend in-process and on
virtual time, then scores the answers (`pipeline.evaluate`). `tierroute calibrate` searches
the shipped configuration toward a target with k-fold cross-validation
(`pipeline.calibrate`). Needs the `train` extra; importing this package stays light.
"""
