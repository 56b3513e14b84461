"""The results store: every finished run's variants and measurements in one SQLite file,
so ``edgescale runs`` lists runs and the analysis (pick, compare) can span several runs.

``results.json`` stays the source of truth; the store is an index over run directories
and can be rebuilt from them (``edgescale runs --add RUN_DIR``).

- **Run id** = the run directory's resolved path. A run directory holds one current
  ``results.json`` (a rerun overwrites it, reusing finished work), and every ONNX path in
  it is relative to that directory, so one row set per directory mirrors what is on disk.
  A hash of the manifest would change on every rerun (the manifest records the wall time)
  and leave stale duplicates that point at overwritten files; the manifest's hash is kept
  as a column instead, to trace which manifest a row set came from.
- **Concurrency.** WAL journal (readers never block the writer), a busy timeout, and each
  write is one ``BEGIN IMMEDIATE`` transaction (the write lock is taken up front, so two
  writers cannot deadlock upgrading a read lock) retried with jittered exponential
  backoff while SQLite reports the database busy or locked. WAL needs a local file
  system (https://www.sqlite.org/wal.html: not over a network file system).
- **Lossless.** Each variant is kept as its ``results.json`` entry (``variant_json``) next
  to the columns one queries by, so :func:`~edgescale.store.read.load_run` rebuilds
  ``results.json`` exactly and :func:`~edgescale.store.read.load_variants` gives the same
  typed variants, both through the one reader.

Modules (import a name from the module that defines it; this package re-exports nothing):

- :mod:`edgescale.store.schema`: the DDL and its version, where the file lives, connections,
  and the retried read and write transactions;
- :mod:`edgescale.store.write`: recording a finished run directory (:func:`record_run`);
- :mod:`edgescale.store.read`: listing runs and loading their typed results and variants.
"""
