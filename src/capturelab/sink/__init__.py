"""The sink: lands capture batches on the storage array exactly once (issue 5, design "Storage layout").

- ``layout``: where segments, indexes, quarantine and tombstones live under the mount.
- ``index``: the fixed-size index record per stored batch.
- ``ledger``: which (collector id, sequence) ranges are already stored (dedup).
- ``store``: append + fsync + crash recovery of segment files.
- ``erasure``: erasure on request (tombstones) and retention.
- ``inventory``: walk the store and prove no loss / no duplicate (``capturelab sink verify``).
- ``service``: the Kafka consumer-group loop; offsets are committed only after fsync.
"""
