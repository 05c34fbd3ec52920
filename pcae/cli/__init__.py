"""The `pcae` command line: options -> one library call -> a short summary.

This package holds the typer app, its table of commands and `main()`, which turns what the library
raises into exit codes: PcaeError (and a library function's ValueError about an argument) is one
red line on stderr and exit 1, a full disk, a refused path or want of memory likewise, Ctrl-C is
exit 130, usage errors exit 2 (typer's convention), and a closed pipe (`| head`) ends quietly,
exit 0. The commands live by group:

    training     train, train-ae, train-portraits (progress: their bar and summaries)
    inference    sample, evaluate, reconstruct, export
    portraits    portrait, interpolate
    latents      embed, search, index merge|describe
    data         data info|import
    compare      compare-decoders
    demo         demo (the web page, pcae/demo.py)
    common       the options several commands share, and the library defaults they show

Thin on purpose: every command imports its library function inside its body, so `pcae --help`
does not import torch.
"""
from __future__ import annotations

import os
import re
import sys
import traceback

import typer

from pcae import __version__
from pcae.cli import compare, data, demo, inference, latents, portraits, training
from pcae.errors import DiskFull, Interrupted, PcaeError, first_line, is_disk_full

app = typer.Typer(
    name="pcae",
    help="Representation learning with conditional Gated PixelCNN decoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool):
    if value:
        typer.echo(f"pcae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Representation learning with conditional Gated PixelCNN decoders."""


# the commands, in the order `pcae --help` lists them; the groups (data, index) come last
app.command("embed")(latents.embed_cmd)
app.command("search")(latents.search_cmd)
app.command("train")(training.train_cmd)
app.command("sample")(inference.sample_cmd)
app.command("evaluate")(inference.evaluate_cmd)
app.command("export")(inference.export_cmd)
app.command("train-portraits")(training.train_portraits_cmd)
app.command("portrait")(portraits.portrait_cmd)
app.command("interpolate")(portraits.interpolate_cmd)
app.command("train-ae")(training.train_ae_cmd)
app.command("reconstruct")(inference.reconstruct_cmd)
app.command("compare-decoders")(compare.compare_decoders_cmd)
app.command("demo")(demo.demo_cmd)
app.add_typer(data.app, name="data")
app.add_typer(latents.index_app, name="index")


def os_error_line(e: OSError) -> str:
    """One line for an OSError: the disk is full, a folder is read-only, a path is a folder...
    Outputs are written through temp files and renames, so what was there before is intact."""
    import errno

    where = e.filename or ""
    if is_disk_full(e):
        return str(DiskFull(where or None))
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where or 'a file'}: cannot be written here ({e.strerror}); choose another place"
    if e.errno == errno.EISDIR:
        return f"{where}: is a folder, a file was expected"
    if e.errno == errno.ENOTDIR:
        return f"{where}: a part of this path is a file, a folder was expected"
    return f"{where + ': ' if where else ''}{e.strerror or first_line(e)}"


def _options_given(args: list[str]) -> set[str]:
    return {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}


def value_error_line(e: ValueError, args: list[str]) -> str:
    """One line for a library function's ValueError. It names its arguments ("steps must be >= 2,
    got 1", "resume and force exclude each other"): those the command line gave as options are
    named as such ("--steps must be >= 2, got 1")."""
    line = first_line(e, limit=1000)
    given = _options_given(args)

    def option(word: re.Match) -> str:
        flag = "--" + word[0].replace("_", "-")
        return flag if flag in given else word[0]

    head = re.match(r"\w+(?: and \w+)*", line)
    return line if head is None else re.sub(r"\w+", option, head[0]) + line[head.end():]


def cli_terms(line: str, args: list[str]) -> str:
    """A library message in the command line's terms: a parameter name with an underscore that the
    command line gave as an option ("face_index") is named as that option ("--face-index")."""
    given = _options_given(args)
    return re.sub(r"\b[a-z]+(?:_[a-z]+)+\b",
                  lambda w: "--" + w[0].replace("_", "-") if "--" + w[0].replace("_", "-") in given else w[0], line)


def _exit_now(code: int) -> None:
    """Leave without exit handlers: after a write that failed for want of space the HDF5 library
    crashes (segfault) in its own exit handler. Everything pcae writes is already closed or discarded."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _error(line: str) -> None:
    """The one line of an error; with PCAE_TRACEBACK=1, the traceback of what raised it first (to
    see where a bug in pcae that surfaced as a user's error came from)."""
    if os.environ.get("PCAE_TRACEBACK", "0") not in ("", "0") and sys.exc_info()[0] is not None:
        traceback.print_exc()
    typer.secho(line, fg=typer.colors.RED, err=True)


def main():
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as escapes
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        code = app(standalone_mode=False)  # a command's typer.Exit(n) comes back as n here
        sys.stdout.flush()
        if code == 130 and not isinstance(code, bool):  # typer's answer to Ctrl-C: say so
            _error("interrupted")
        if isinstance(code, int) and not isinstance(code, bool) and code:
            sys.exit(code)
    except BrokenPipeError:  # `pcae search ... | head -n 1`: the reader has all it wants
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        except (OSError, ValueError):
            pass
        sys.exit(0)
    except SystemExit as e:  # typer's answer to a closed pipe inside a command: exit 1, quietly
        if e.code == 1 and type(sys.stdout).__name__ == "PacifyFlushWrapper":
            sys.exit(0)
        raise
    except MemoryError:
        _error("error: out of memory; try smaller --batch-size, --image-size or --n")
        sys.exit(1)
    except DiskFull as e:
        _error(f"error: {e}")
        _exit_now(1)
    except Interrupted as e:
        _error(str(e))  # the message says what was saved
        sys.exit(130)
    except PcaeError as e:
        _error(f"error: {cli_terms(str(e), sys.argv[1:])}")
        sys.exit(1)
    except ValueError as e:  # a library function refused an argument's value
        _error(f"error: {value_error_line(e, sys.argv[1:])}")
        sys.exit(1)
    except OSError as e:  # the machine's doing (disk full, permissions, a path that is a folder)
        _error(f"error: {os_error_line(e)}")
        if is_disk_full(e):
            _exit_now(1)
        sys.exit(1)
    except KeyboardInterrupt:
        _error("interrupted")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:  # click's usage errors (typer 0.2x vendors click as typer._click)
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        raise
