#!/bin/sh
# Mutation testing of one target with mutmut 2's own runner (configuration: setup.cfg [mutmut]):
#     benchmarks/mutation.sh TARGET
# Each target is one source file and the tests that must kill its mutants; what each guards and the
# reasons of the surviving mutants are in docs/contributing/mutation.md.
set -eu
cd "$(dirname "$0")/.."
target=${1:?usage: benchmarks/mutation.sh journal|undo|locks|kinds|lab|scheduler|jobs|collect|cli}
case "$target" in
    journal) src=epyclab/notebooks/journal.py; tests="tests/test_journal_records.py tests/test_journal_mutants.py" ;;
    undo) src=epyclab/notebooks/undo.py; tests="tests/test_undo_log.py tests/test_undo_mutants.py" ;;
    locks) src=epyclab/notebooks/locks.py; tests="tests/test_notebook_locks.py tests/test_locks_mutants.py" ;;
    kinds) src=epyclab/notebooks/kinds.py; tests="tests/test_kinds_mutants.py" ;;
    lab) src=epyclab/labs/lab.py
        tests="tests/test_lab_commit_loop.py tests/test_lab.py tests/test_lab_mutants.py tests/test_create_with.py tests/test_interrupts.py" ;;
    scheduler) src=epyclab/labs/scheduler.py
        tests="tests/test_chunk_sizes.py tests/test_parallel_units.py tests/test_parallel_retry_mutants.py tests/test_parallel_fork.py" ;;
    jobs) src=epyclab/labs/jobs.py; tests="tests/test_job_ids.py tests/test_jobs_mutants.py" ;;
    collect) src=epyclab/labs/collect.py; tests="tests/test_collect_decisions.py tests/test_collect_mutants.py" ;;
    cli) src=epyclab/cli.py
        tests="tests/test_cli_copy_mutants.py tests/test_copy_reads_sources_only.py tests/test_cli_notebooks.py" ;;
    *) echo "benchmarks/mutation.sh: no target $target" >&2; exit 2 ;;
esac
# mutmut writes each mutant into the source file itself: start from committed code, so that a run
# killed half-way is undone by `git checkout epyclab/`.
if ! git diff --quiet -- epyclab/; then
    echo "benchmarks/mutation.sh: epyclab/ has uncommitted changes: commit or stash them first" >&2
    exit 2
fi
# One cache per target: .mutmut-cache holds the baseline time of the tests and each mutant's fate.
cache=".mutmut-cache.$target"
if [ -e "$cache" ]; then mv "$cache" .mutmut-cache; else rm -f .mutmut-cache; fi
trap 'if [ -e .mutmut-cache ]; then mv .mutmut-cache "$cache"; fi' EXIT
status=0
HYPOTHESIS_PROFILE=mutation mutmut run --paths-to-mutate "$src" --no-progress \
    --runner "python -m pytest -x -q -p no:cacheprovider -o addopts= $tests" || status=$?
mutmut results || true
git diff --quiet -- epyclab/ || echo "benchmarks/mutation.sh: a mutant is left in epyclab/: git checkout epyclab/" >&2
exit "$status"
