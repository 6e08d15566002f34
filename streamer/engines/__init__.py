"""What consumes the request topic: the Faust agent (``faust.py``), the confluent-kafka loop for heavy topics
(``confluent.py``) and files for offline scoring (``offline.py``). Each only consumes, hands ``Records`` to the
shared pipeline (or scores them directly, offline) and commits what the ledgers say.
"""
