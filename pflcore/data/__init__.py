"""Layer 2, data: what lies on disk and how it is cut among clients.

Loaders for the on-disk formats (:mod:`~pflcore.data.images`), partition
primitives (:mod:`~pflcore.data.partition`), every client's splits
(:mod:`~pflcore.data.client_data`), a SuperNode's partition files and data
(:mod:`~pflcore.data.partition_files`, :mod:`~pflcore.data.node_data`) and
the digests of the files read (:mod:`~pflcore.data.digests`). Imports only
:mod:`pflcore.config`.
"""
