"""bench: a built repository in; perf_analyzer sweeps of its served variants against the
in-process ceiling out (results.json, report.md/html with plots, the verdict).

    perf_analyzer.py   find the tool and its libraries, run one point, parse its CSV
    workspace.py       the private repository copy (derived python-ts, instance counts)
    targets.py         bench's own embedded server, or a running one (--url)
    ceiling.py         the same artifacts in-process, no server
    sweep.py           variants x instances x batch sizes x concurrency, progress, partial results
    footprint.py       per load: memory (stubs' PSS/USS, server growth), GPU memory, load time,
                       first request
    results.py         results.json (versioned schema)
    analysis.py        ratios, scaling, verdict sentences, shortfalls
    plots.py, report.py  PNG plots, report.md and report.html
    runner.py          the whole run, as the command and the benchmark script use it
"""
