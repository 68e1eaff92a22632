"""The harness around the actor kernel: what runs a model's scenarios from files and the
command line. Config loading (``config``), the ``pagehint`` CLI (``cli``), one run and its
directory (``model``), sweeps on a process pool or Dask (``sweep``), run logs as DuckDB tables
and their Parquet copies (``logdb``) and the kernel's own demo (``demo``)."""
