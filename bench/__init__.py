"""lamina's benchmarks: lamina and the real Docker Engine, side by side in one run.

``python -m bench`` (``make bench``) is the single entry point. Each measurement lives
in the module named for it:

    context.py          generate a build context (N files / M bytes), edit one file
    measure.py          repeat, median and spread; peak memory of a child process
    dockerd.py          reach a Docker Engine: $DOCKER_HOST, or a private dockerd
    docker_side.py      classic-builder builds (DOCKER_BUILDKIT=0) through the docker CLI
    lamina_side.py      the same builds through the ``lamina`` CLI
    synthetic_store.py  a real, consistent store of thousands of images and layers
    inspect_scale.py    system df, a prune plan and the app on that store
    throughput.py       layer commit MB/s against sha256sum and tar on the same data
    profiling.py        cProfile of the slowest lamina path
    report.py           the Markdown table and the JSON results

Ratios are measured within one run (lamina and Docker interleaved, repeat by repeat)
because absolute times on shared machines are noisy.
"""
