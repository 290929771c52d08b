"""tune: a built repository and a stated load in; the fastest correct deployment of each model on
this machine out -- a production repository holding only each model's winner (variant x
instances x threads x batching, its config rewritten, verified over HTTP and gRPC before it is
swapped in), results.json with every measured point (resumable), and a report.

    candidate.py   one deployment: a model directory + config settings, its key, its config
    space.py       what is searched per model directory (instances, threads, batching)
    objective.py   max-throughput / min-latency, p99 and memory budgets, ranking, Pareto front
    settings.py    the search's settings (stored, so --resume continues the same search)
    measure.py     one candidate on bench's server, with bench's perf_analyzer driver
    search.py      staged (or grid) search within a time budget
    decision.py    each model's decision in figures and in one sentence
    production.py  stage, verify, swap in the winners
    report.py      report.md / report.html and the throughput-vs-p99 plot
    runner.py      the whole run, as the command and the benchmark script use it
"""
