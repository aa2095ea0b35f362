"""The I/O layer: where results go and how Telltale talks to Kafka and InfluxDB.

- ``influx``: the one InfluxDB client (line-protocol writes, InfluxQL over HTTP, checks);
- ``buffer``: the worker's durable buffer in front of InfluxDB (spill to disk, refusals);
- ``store``: the ``Store`` contract of the embedded pipeline; ``local``, ``memory``: stores;
- ``kafka``: topic creation and clients that reconnect after the broker went away;
- ``routes``, ``handlers``, ``silences``, ``delivery``: which alerts go where, how they are
  sent, what is silenced, and delivery with retries; ``notify``: its Kafka service and
  the embedded notifier thread.
"""
