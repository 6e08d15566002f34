"""Background work beside the data path, each on one ``Service`` thread (``runner.py``): the prediction log,
the label consumer, the online-weights refresh, the quality monitor, the output-topic watch and the watchdog.
"""
