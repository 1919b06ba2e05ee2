"""The ``epyclab`` command: inspect and edit notebooks, and set up clusters.

Notebook commands address result sets as ``NOTEBOOK:TAG``. Commands that
change a file take ``--dry-run``, check everything before they write, and
write through the notebook's own commit (or a temporary file renamed into
place), so an error never leaves a half-written file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import click

from epyclab import __version__
from epyclab.errors import EpyclabError, UnknownResultSetError
from epyclab.notebooks import reruns
from epyclab.notebooks.backup import attributeItems, backupNotebook, pendingItems, typedRows
from epyclab.notebooks.labnotebook import LabNotebook
from epyclab.notebooks.paths import refuse_special_path
from epyclab.notebooks.registry import notebookClass
from epyclab.notebooks.resultset import ResultSet
from epyclab.notebooks.sidefiles import check_writable_file, safe_write


class _Commands(click.Group):
    """The notebook commands, and ``cluster``, whose tooling (ipyparallel) is imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), "cluster"})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "cluster":
            from epyclab.clustersetup.cli import cluster

            return cluster
        return super().get_command(ctx, name)


@click.group(cls=_Commands)
@click.version_option(__version__, prog_name="epyclab")
def main() -> None:
    """epyclab: computational experiments over parameter spaces.

    Inspect notebooks (show, export, report), edit them (copy, remove, select), and set
    up ipyparallel clusters (cluster ...).
    """



# ---- opening notebooks -----------------------------------------------------------------


@contextmanager
def _opened(path: str, write: bool = False, create: bool = False) -> Iterator[LabNotebook]:
    """Open a notebook for the length of a command, turning library errors into clean CLI errors."""
    _refuse_special(_expand(path))
    p = Path(_expand(path))
    if not create and not p.exists():
        raise click.ClickException(f"no notebook at {path}: check the path")
    try:
        cls = notebookClass(p)
    except EpyclabError as e:
        raise click.ClickException(str(e)) from e
    try:
        if write or create:
            # A notebook class opens a read-only file read-only (as epyc did); a command that is to
            # change the file fails before it opens anything, so that it changes nothing.
            check_writable_file(str(p))
        kwargs = {} if write or create else {"readonly": True}
        nb = cls(str(p), **kwargs)
    except EpyclabError as e:
        raise click.ClickException(f"cannot open {path}: {e}") from e
    try:
        yield nb
    except BaseException:
        # A command that failed half-way saves nothing: the file stays as it was.
        nb.abandon()
        raise
    try:
        nb.close()
    except EpyclabError as e:
        raise click.ClickException(f"cannot save {path}: {e}") from e


def _refuse_special(path: str) -> None:
    """Refuse a path that names no regular file (a FIFO, device, directory...) before anything opens it."""
    try:
        refuse_special_path(path)
    except EpyclabError as e:
        raise click.ClickException(str(e)) from e


def _refuse_output(path: str) -> None:
    """Refuse an output file name that is empty or names no regular file, saying it is the output."""
    try:
        refuse_special_path(path, output=True)
    except EpyclabError as e:
        raise click.ClickException(str(e)) from e


def _expand(path: str) -> str:
    """``path`` with a leading ``~`` or ``~user`` expanded, as a shell would.

    Only on the command line: a path can reach it unexpanded (quoted, or after
    ``=``), and a user types it as a shell path. The Python API takes paths as
    ``open()`` and h5py do, literally (as epyc did), so it is not expanded there.
    """
    return os.path.expanduser(path)


def _split(spec: str) -> tuple[str, str]:
    """Split ``NOTEBOOK:TAG``: at the first colon after which an existing file ends, so tags may hold colons.

    A leading ``~`` of NOTEBOOK is expanded.
    """
    spec = _expand(spec)
    for i, c in enumerate(spec):
        if c == ":" and i and os.path.isfile(spec[:i]) and spec[i + 1 :]:
            return spec[:i], spec[i + 1 :]
    path, sep, tag = spec.rpartition(":")
    if not sep or not path or not tag:
        raise click.BadParameter(f"{spec!r} is not NOTEBOOK:TAG")
    return path, tag


def _split_optional(spec: str) -> tuple[str, str | None]:
    """``NOTEBOOK`` (its current set: tag None) or ``NOTEBOOK:TAG``; a leading ``~`` is expanded."""
    spec = _expand(spec)
    if spec == "" or os.path.isfile(spec) or (os.path.lexists(spec) and ":" not in spec):
        return spec, None  # a file of any kind: what it is is said when it is opened
    return _split(spec)


def _resultset(nb: LabNotebook, tag: str) -> ResultSet:
    try:
        return nb.resultSet(tag)
    except UnknownResultSetError as e:
        raise click.ClickException(f"{nb.name()}: {e}") from e


# ---- show ----------------------------------------------------------------------------------


@main.command()
@click.argument("notebook")
@click.option("--long", "long_", is_flag=True, help="List every column of every result set.")
def show(notebook: str, long_: bool) -> None:
    """Summarise NOTEBOOK: its description and each result set."""
    with _opened(notebook) as nb:
        click.echo(f"{notebook}: {nb.description()}")
        click.echo(f"{nb.numberOfResultSets()} result set(s){', locked' if nb.isLocked() else ''}")
        _say_waiting_journal(notebook)
        for tag in nb.resultSets():
            rs = nb.resultSet(tag)
            flags = [f for f, on in (("current", tag == nb.currentTag()), ("locked", rs.isLocked())) if on]
            click.echo("")
            click.echo(f"{tag}{' (' + ', '.join(flags) + ')' if flags else ''}")
            click.echo(f"  description: {rs.description()}")
            rows, replaced = rs.numberOfResults(), ""
            if reruns.hasReruns(rs.attributes()):
                # Rows a rerun replaced stay stored but are not shown (nor counted as failed).
                shown = len(rs.dataframe())
                rows, replaced = shown, f"  (and {rs.numberOfResults() - shown} replaced by reruns, kept)"
            click.echo(
                f"  rows: {rows}  failed: {rs.numberOfFailedResults()}  "
                f"pending: {rs.numberOfPendingResults()}{replaced}"
            )
            for label, names in (
                ("parameters", rs.parameterNames()),
                ("results", rs.resultNames()),
                ("metadata", rs.metadataNames()),
            ):
                if label == "metadata" and not long_:
                    click.echo(f"  metadata: {len(names)} column(s) (--long lists them)")
                    continue
                click.echo(f"  {label}: {', '.join(names) if names else '-'}")
            if long_ and rs.keys():
                for k in rs.keys():
                    click.echo(f"  attribute {k}: {rs[k]!r}")


def _say_waiting_journal(path: str) -> None:
    """Say when commits wait in a journal beside the file (shown above, but not in the file alone)."""
    from epyclab.notebooks.journal import read_frames
    from epyclab.notebooks.sidefiles import side_path

    journal = side_path(path, "journal")
    waiting = len(read_frames(journal)) if os.path.exists(journal) else 0
    if waiting:
        click.echo(
            f"journal: {waiting} commit(s) wait in {journal}: they are shown here but not yet in the "
            f"file itself (plain h5py does not see them); opening the notebook for writing, or closing "
            f"the program that writes it, folds them in"
        )


# ---- export ----------------------------------------------------------------------------------


@main.command()
@click.argument("source")
@click.argument("out_file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--format", "fmt", type=click.Choice(["csv", "netcdf", "parquet"]), default=None,
              help="The file's format (default: from FILE's suffix: .nc netCDF, .parquet Parquet, else CSV).")
@click.option("--only-successful", is_flag=True, help="Leave out failed runs (CSV and Parquet).")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@click.option("--dry-run", is_flag=True, help="Say what would be written, write nothing.")
def export(source: str, out_file: str, fmt: str | None, only_successful: bool, force: bool, dry_run: bool) -> None:
    """Write result set SOURCE (NOTEBOOK:TAG, or NOTEBOOK for its current set) to FILE (- for CSV on stdout).

    CSV: every cell is written so that it reads back exactly (floats at their
    shortest exact digits, arrays in full with dtype and shape). netCDF: the
    result set as a labelled array (ResultSet.dataset()). Parquet: the table.
    netCDF and Parquet files are read back before they are put in place, and
    what would not read back the same is refused, named. See docs/cli.md.
    """
    from epyclab.notebooks.exchange import formatOf

    path, tag = _split_optional(source)
    to_stdout = out_file == "-"
    target = out_file if to_stdout else _expand(out_file)
    if not to_stdout:
        # Before the notebook is read: an empty name, a FIFO or a device is never written (nor waited on).
        _refuse_output(target)
    fmt = formatOf(target, fmt)
    if to_stdout and fmt != "csv":
        raise click.ClickException(f"{fmt} is written to a file, not to stdout: name a file")
    if fmt != "csv":
        return _export_exchange(path, tag, target, fmt, only_successful, force, dry_run)
    from epyclab.notebooks.csvcells import writeCSV  # here: the command line starts without pandas

    with _opened(path) as nb:
        rs = _resultset(nb, nb.currentTag() if tag is None else tag)
        df = rs.dataframe(only_successful=only_successful)
        header = [*rs.parameterNames(), *rs.resultNames(), *rs.metadataNames()]
    where = "stdout" if to_stdout else target
    if not to_stdout and os.path.lexists(target):
        # A CSV file is written beside its name and renamed over it: never over a FIFO or device (checked
        # again: it may have become one while the notebook was read).
        _refuse_output(target)
    if not to_stdout and not force and os.path.lexists(target):
        raise click.ClickException(f"{target} exists: use --force to overwrite it, or name another file")
    if dry_run:
        click.echo(f"would write {len(df)} row(s) x {len(df.columns) or len(header)} column(s) to {where}",
                   err=to_stdout)
        return
    if to_stdout:
        try:
            writeCSV(df, click.get_text_stream("stdout"), header)
        except BrokenPipeError:
            raise  # the reader stopped (`| head`): click exits quietly
        except OSError as e:
            raise click.ClickException(f"cannot write to stdout: {e.strerror or e}") from e
        return
    # Written beside the target and renamed, so the CSV is whole or absent.
    try:
        if force:
            safe_write(target, lambda f: writeCSV(df, f, header), what="exporting to it")
        else:
            _write_new(target, lambda f: writeCSV(df, f, header))
    except FileNotFoundError as e:
        raise click.ClickException(f"cannot write {target}: {e.strerror}: check the directory") from e
    except EpyclabError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote {len(df)} row(s) to {target}")


def _export_exchange(path: str, tag: str | None, target: str, fmt: str, only_successful: bool, force: bool,
                     dry_run: bool) -> None:
    """``export`` to netCDF or Parquet (see :mod:`epyclab.notebooks.exchange`)."""
    from epyclab.notebooks import exchange

    if not force and os.path.lexists(target):
        raise click.ClickException(f"{target} exists: use --force to overwrite it, or name another file")
    if not os.path.isdir(os.path.dirname(os.path.abspath(target))):
        raise click.ClickException(f"cannot write {target}: no such directory: check the directory")
    try:
        with _opened(path) as nb:
            tag = nb.currentTag() if tag is None else tag
            rs = _resultset(nb, tag)
            where = f"{path}:{tag}"
            if fmt == "netcdf":
                if only_successful:
                    raise click.ClickException(
                        "--only-successful applies to CSV and Parquet; a netCDF file keeps every point, "
                        "with the mask variable epyclab.mask marking the successful ones"
                    )
                data = rs.dataset()
                what = f"{len(data.data_vars)} variable(s) over {dict(data.sizes)}"
            else:
                data = rs.dataframe(only_successful=only_successful)
                what = f"{len(data)} row(s) x {len(data.columns)} column(s)"
            if dry_run:
                click.echo(f"would write {what} to {target} ({fmt})")
                return
            if fmt == "netcdf":
                exchange.writeNetCDF(data, target, where)
            else:
                exchange.writeParquet(data, target, rs.attributes(), where)
    except EpyclabError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote {what} to {target} ({fmt})")


def _write_new(target: str, write: Callable) -> None:
    """Write the new file ``target`` whole through ``write(f)``, never over a file that appeared meanwhile.

    Raises:
        click.ClickException: ``target`` exists now.
    """
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".new", dir=directory)
    os.close(fd)
    os.unlink(tmp)  # a free name beside the target: safe_write makes it whole
    try:
        safe_write(tmp, write, what="exporting to it")
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise click.ClickException(
                f"{target} exists (it appeared while exporting): use --force to overwrite it, or name another file"
            ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


# ---- report ----------------------------------------------------------------------------------


@main.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="The HTML file to write (default: NOTEBOOK with the suffix .html).")
@click.option("--force", is_flag=True, help="Overwrite the HTML file if it exists.")
def report(notebook: str, output: str | None, force: bool) -> None:
    """Write one self-contained HTML page about NOTEBOOK: progress, times, failures, provenance, plots.

    The notebook is opened read-only, so a sweep may be writing it meanwhile;
    epyc 1.x notebooks are read as they are. The page needs no network: plots
    (drawn by matplotlib) are embedded in it.
    """
    from epyclab.report import renderNotebook  # here: matplotlib only for this command

    # The notebook's name first: the default page's name is made from it (and '' has no suffix to change).
    _refuse_special(_expand(notebook))
    target = _expand(output) if output is not None else str(Path(_expand(notebook)).with_suffix(".html"))
    _refuse_output(target)
    if os.path.abspath(target) == os.path.abspath(_expand(notebook)):
        raise click.ClickException(f"the report would overwrite the notebook {notebook}: name another file with -o")
    if not force and os.path.lexists(target):
        raise click.ClickException(f"{target} exists: use --force to overwrite it, or name another file with -o")
    with _opened(notebook) as nb:
        try:
            page = renderNotebook(nb, notebook)
        except EpyclabError as e:
            raise click.ClickException(str(e)) from e
        sets = nb.numberOfResultSets()
    try:
        safe_write(target, lambda f: f.write(page), what="writing the report")
    except EpyclabError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote a report of {sets} result set(s) to {target}")


# ---- backup ----------------------------------------------------------------------------------


@main.command()
@click.argument("notebook")
@click.argument("dest")
def backup(notebook: str, dest: str) -> None:
    """Write a consistent copy of NOTEBOOK to the new file DEST, also while another program writes NOTEBOOK.

    DEST is one self-contained notebook file (no journal beside it) holding every row committed
    before the backup started. Copying a notebook's files by hand (NOTEBOOK, NOTEBOOK.journal,
    NOTEBOOK.undo) while it is written is not safe: the copy can lack committed rows.
    """
    source, target = _expand(notebook), _expand(dest)
    _refuse_special(source)
    if not os.path.exists(source):
        raise click.ClickException(f"no notebook at {notebook}: check the path")
    try:
        rows = backupNotebook(source, target)
    except EpyclabError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"backed up {source} to {target} ({rows} row(s))")


# ---- copy, remove, select ----------------------------------------------------------------------


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.argument("dest")
@click.option("--dry-run", is_flag=True, help="Say what would be copied, change nothing.")
def copy(sources: tuple[str, ...], dest: str, dry_run: bool) -> None:
    """Copy result sets SOURCES (each NOTEBOOK:TAG or NOTEBOOK:TAG=NEWTAG) into notebook DEST (created if missing).

    Results, pending results, description and attributes are copied; a set
    that was locked is locked in DEST too. TAG=NEWTAG copies the set under the
    tag NEWTAG (so two notebooks' default sets can go into one file). A tag
    already in DEST is an error; nothing is written unless every set can be copied.
    """
    dest = _expand(dest)
    wanted: dict[str, tuple] = {}
    named: list[tuple[str, str, str]] = []
    renamed: set[str] = set()
    for spec in sources:
        path, rest = _split(spec)
        with _opened(path) as src:
            tag, new = _renaming(src, path, rest)
            named.append((path, tag, new))
            if new in wanted:
                continue  # refused below, before anything is written
            if new != tag:
                renamed.add(new)
            rs = _resultset(src, tag)
            wanted[new] = (f"{path}:{tag}", rs.description(), typedRows(rs), dict(pendingItems(rs)), attributeItems(rs),
                           rs.isLocked())
    news = [new for _, _, new in named]
    twice = sorted({t for t in news if news.count(t) > 1})
    if twice:
        raise click.ClickException(
            f"result set tag(s) {twice} are named more than once in {dest}; a notebook holds one set per tag: "
            f"give each its own tag with SOURCE:TAG=NEWTAG"
        )
    exists = Path(dest).exists()
    if exists:
        with _opened(dest) as d:
            clash = [t for t in wanted if t in d and not _replaceable(d, t)]
            if d.isLocked():
                raise click.ClickException(f"{dest} is locked (finished): nothing can be copied into it")
        if clash:
            raise click.ClickException(
                f"{dest} already has result set(s) {clash}: copy under another tag with SOURCE:TAG=NEWTAG, "
                f"or remove them first"
            )
    if dry_run:
        _say_copied(wanted, renamed, dest, "would copy")
        return
    if exists:
        with _opened(dest, write=True) as d:
            _fill(d, wanted)
        _say_copied(wanted, renamed, dest, "copied")
        return
    # A new notebook is made under a temporary name and given its name only when whole.
    target = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent or Path("."))
    os.close(fd)
    os.unlink(tmp)
    try:
        with _opened(tmp, write=True, create=True) as d:
            d.setDescription(f"Notebook {target.name}")
            _fill(d, wanted)
        try:
            os.link(tmp, target)  # never over a file that appeared meanwhile
        except FileExistsError:
            raise click.ClickException(f"{dest} was created by someone else meanwhile; nothing was copied") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    _say_copied(wanted, renamed, dest, "copied")


def _renaming(src: LabNotebook, path: str, rest: str) -> tuple[str, str]:
    """The tag named by ``rest`` (``TAG`` or ``TAG=NEWTAG``) in ``src``, and the tag it gets in the destination.

    Tags may hold ``=``: the whole of ``rest`` is a tag when ``src`` has a set
    of that name (copied under it); otherwise ``rest`` splits at the one ``=``
    whose left side is a set of ``src``.

    Raises:
        click.ClickException: no set, or more than one reading, fits.
    """
    if rest in src:
        return rest, rest
    readings = [(rest[:i], rest[i + 1:]) for i, c in enumerate(rest)
                if c == "=" and rest[:i] in src and rest[i + 1:]]
    if len(readings) == 1:
        return readings[0]
    if readings:
        shown = ", ".join(f"{t!r} as {n!r}" for t, n in readings)
        raise click.ClickException(
            f"{path}:{rest} can be read as copying {shown}: the tags hold '='; copy the set into a notebook "
            f"of its own first (under its own tag), then rename it from there"
        )
    tried = [rest] + [rest[:i] for i, c in enumerate(rest) if c == "="]
    raise click.ClickException(
        f"{path} has no result set {' or '.join(repr(t) for t in tried)} (its sets: {src.resultSets()}): "
        f"check the tag; NOTEBOOK:TAG=NEWTAG copies TAG under the tag NEWTAG"
    )


def _say_copied(wanted: dict, renamed: set[str], dest: str, verb: str) -> None:
    for new, (source, _, results, pending, _, _) in wanted.items():
        shown = f"{dest}:{new}" if new in renamed else dest
        click.echo(f"{verb} {source} -> {shown} ({len(results)} row(s), {len(pending)} pending)")


def _replaceable(d: LabNotebook, tag: str) -> bool:
    """True for the default set when it is empty: copying a default set fills it."""
    rs = d.resultSet(tag)
    return (
        tag == LabNotebook.DEFAULT_RESULTSET
        and rs.numberOfResults() == 0
        and rs.numberOfPendingResults() == 0
        and not rs.keys()
    )


def _fill(d: LabNotebook, wanted: dict) -> None:
    """Add the wanted result sets to ``d``, keeping its current set; any error leaves ``d`` unsaved."""
    previous = d.currentTag()
    for tag, (source, description, results, pending, attrs, locked) in wanted.items():
        try:
            if tag in d:  # the empty default set
                rs = d.select(tag)
                rs.setDescription(description)
            else:
                rs = d.addResultSet(tag, description)
            for rc in results:
                rs.addSingleResult(rc)
            for jobid, params in pending.items():
                # Through the notebook: a job id is pending in one set of a notebook at most.
                d.addPendingResult(params, jobid, tag=tag)
            for k, v in attrs.items():
                rs[k] = v
            if locked:
                rs.finish()
        except EpyclabError as e:
            raise click.ClickException(f"cannot copy {source} into {d.name()}:{tag}: {e}; nothing was copied") from e
    d.select(previous)
    try:
        d.commit()
    except EpyclabError as e:
        raise click.ClickException(f"cannot save {d.name()}: {e}; nothing was copied") from e


@main.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--dry-run", is_flag=True, help="Say what would be removed, change nothing.")
@click.option("--force", is_flag=True, help="Also remove locked result sets and sets with pending results.")
def remove(targets: tuple[str, ...], dry_run: bool, force: bool) -> None:
    """Remove result sets TARGETS (each NOTEBOOK:TAG)."""
    by_file: dict[str, list[str]] = {}
    for spec in targets:
        path, tag = _split(spec)
        by_file.setdefault(path, []).append(tag)
    # Check every file before changing any, so a bad name changes nothing.
    for path, tags in by_file.items():
        with _opened(path) as nb:
            if nb.isLocked():
                raise click.ClickException(f"{path} is locked (finished): nothing can be removed from it")
            for tag in tags:
                rs = _resultset(nb, tag)
                if tag == nb.DEFAULT_RESULTSET:
                    raise click.ClickException(f"{path}:{tag} is the default result set, which always exists")
                if not force and rs.isLocked():
                    raise click.ClickException(f"{path}:{tag} is locked (finished); use --force to remove it")
                if not force and rs.numberOfPendingResults():
                    raise click.ClickException(
                        f"{path}:{tag} has {rs.numberOfPendingResults()} pending result(s) that would be "
                        f"lost; collect them first, or use --force"
                    )
    if dry_run:
        for path, tags in by_file.items():
            for tag in tags:
                click.echo(f"would remove {path}:{tag}")
        return
    reselected: list[str] = []
    files: dict[str, ExitStack] = {}
    with ExitStack() as on_error:
        # Every file opened for writing before any is changed: a read-only or busy one changes none.
        for path in by_file:
            files[path] = on_error.enter_context(ExitStack())
            nb = files[path].enter_context(_opened(path, write=True))
            for tag in by_file[path]:
                if tag == nb.currentTag():
                    # A notebook refuses to delete its current set (a later
                    # addResult would silently go elsewhere); naming it here is
                    # an explicit request, so the default set becomes current.
                    nb.select(nb.DEFAULT_RESULTSET)
                    reselected.append(path)
                nb.deleteResultSet(tag)
        on_error.pop_all()
    _save_each(files, lambda path: [f"removed {path}:{tag}" for tag in by_file[path]] + (
        [f"{path}: the current result set is now {LabNotebook.DEFAULT_RESULTSET}"] if path in reselected else []))


def _save_each(files: dict[str, ExitStack], said: Callable[[str], list[str]]) -> None:
    """Save each changed notebook in turn, saying ``said(path)`` only once it is saved.

    A notebook that cannot be saved stops the command; those not saved yet are
    left unchanged (their changes dropped), those saved already were said so.
    """
    paths = list(files)
    for i, path in enumerate(paths):
        try:
            files[path].close()
        except BaseException as e:
            for rest in paths[i + 1:]:
                files[rest].__exit__(type(e), e, e.__traceback__)
            raise
        for line in said(path):
            click.echo(line)


@main.command()
@click.argument("target")
@click.option("--dry-run", is_flag=True, help="Say what would be selected, change nothing.")
def select(target: str, dry_run: bool) -> None:
    """Make result set TARGET (NOTEBOOK:TAG) the notebook's current one."""
    path, tag = _split(target)
    with _opened(path) as nb:
        _resultset(nb, tag)
        before = nb.currentTag()
    if dry_run:
        click.echo(f"would select {tag} in {path} (current: {before})")
        return
    with _opened(path, write=True) as nb:
        nb.select(tag)
        nb.commit()
    click.echo(f"selected {tag} in {path} (was {before})")
