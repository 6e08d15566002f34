"""What consumes the request topic: the Faust agent (``faust.py``) and the confluent-kafka loop for heavy topics
(``confluent.py``). Each only consumes, converts what it consumed to ``Records`` through its client's adapter and
calls the shell they share (``common.py``: pipeline, failure watcher, intake decisions, readiness, commits).
"""
