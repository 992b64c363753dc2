"""The own-traffic commands: `import`, `label` and `export` (docs/own-traffic.md).

Exit codes: 0 done; 3 `label` stopped before the sample was complete (the spend limit, or
calls that failed: rerun to continue); 1 the log or the backend cannot be read or reached;
2 bad arguments, configuration or input file.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tierroute.errors import ConfigError, ProviderError
from tierroute.offline.cli.modelling import progress_bar
from tierroute.offline.cli.operations import (
    EXIT_ALARM,
    EXIT_OK,
    EXIT_UNREADABLE,
    _db_argument,
    _fail,
    _json_argument,
    _print,
    _reading,
    _since,
    _since_argument,
    _unreadable,
)
from tierroute.querylog import QueryLogError, open_store
from tierroute.settings import Settings


def _quiet_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


# -- import ----------------------------------------------------------------------------------


def add_import_parser(subparsers: Any) -> None:
    """Register `import` on an argparse subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "import",
        help="load a team's existing LLM log (JSONL or CSV) into the query log, with text",
        description="Load a JSON-lines or CSV log of answered LLM calls into the query log, "
        "with each question's text, so `tierroute report` describes it and `tierroute "
        "label` can label it. Fields: query or messages (required), model_used, cost_usd, "
        "tokens, user_rating, timestamp, request_id. Importing the same file twice adds "
        "nothing. Exit 0 imported, 2 a bad file (one line names the row and field), 1 when "
        "the log cannot be written.",
    )
    _db_argument(parser)
    parser.add_argument("file", type=Path, metavar="FILE", help="the log to import")
    parser.add_argument(
        "--format", choices=("jsonl", "csv"), default=None, help="default: from the file name"
    )
    _quiet_argument(parser)
    _json_argument(parser)
    parser.set_defaults(func=run_import_command)


async def _import(url: str, args: argparse.Namespace, settings: Settings) -> Any:
    from tierroute.offline.traffic.importer import import_file

    store = open_store(url)
    try:
        return await import_file(
            store,
            args.file,
            settings,
            fmt=args.format,
            progress=progress_bar(args.quiet, "import", "row"),
        )
    finally:
        await store.aclose()


def run_import_command(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]
) -> int:
    """`tierroute import`: 0 imported, 2 a bad file, 1 the log cannot be written."""
    from tierroute.offline.traffic.importer import format_summary

    url = args.db or settings.querylog.url.get()
    try:
        summary = asyncio.run(_import(url, args, settings))
    except ConfigError as exc:
        return _fail("import", exc)
    except QueryLogError as exc:
        return _fail("import", f"cannot write {url}: {exc}", EXIT_UNREADABLE)
    _print(summary.as_dict(), format_summary(summary), args.json)
    return EXIT_OK


# -- label -----------------------------------------------------------------------------------


def add_label_parser(subparsers: Any) -> None:
    """Register `label` on an argparse subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "label",
        help="run a stratified sample of logged questions through every tier and judge them",
        description="Run each sampled logged question (stratified by query type) through "
        "every configured tier on the configured backend (Anthropic with a key, else the "
        "replay backend), have the reference judge grade each answer with the production "
        "judge prompt, and store answers, verdicts, tokens and cost per tier in the log. "
        "Each call is reserved at its worst case before it starts, so the run stops before "
        "passing --max-spend-usd; a rerun resumes without paying for stored work again. "
        "Needs logged question text (import, querylog.store_text, audit or shadow samples). "
        "Exit 0 complete, 3 stopped early (spend limit or failed calls: rerun), 1 the log "
        "or backend failed, 2 bad arguments.",
    )
    _db_argument(parser)
    parser.add_argument("--sample", type=int, required=True, help="questions to label")
    _since_argument(parser, "all")
    parser.add_argument(
        "--max-spend-usd", type=float, default=None, help="stop before this run spends more"
    )
    parser.add_argument(
        "--reference-tier",
        default=None,
        help="the reference tier (default routing.reference_tier, else the top tier)",
    )
    parser.add_argument(
        "--method",
        choices=("consensus", "majority", "judge"),
        default="consensus",
        help="consensus (default): the tiers' and the probe's final answers decide, a judge "
        "only where answers state none, no tier judging its own answer (a split vote goes "
        "to the reference tier's answer; majority: to no answer); judge: the "
        "reference tier judges every answer, its own included",
    )
    parser.add_argument(
        "--max-output-tokens",
        type=int,
        default=None,
        help="cap of each tier's answer (default cascade.max_output_tokens)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="questions in flight")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    _quiet_argument(parser)
    _json_argument(parser)
    parser.set_defaults(func=run_label_command)


async def _label(
    url: str, settings: Settings, environ: Mapping[str, str], options: Any, quiet: bool
) -> Any:
    from tierroute.offline.traffic.labelling import run_label
    from tierroute.providers import build_backend

    async with _reading(url) as store:
        backend = build_backend(settings, environ)
        try:
            return await run_label(
                store,
                backend.provider,
                settings,
                options,
                progress=progress_bar(quiet, "label", "question"),
            )
        finally:
            await backend.aclose()


def run_label_command(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]
) -> int:
    """`tierroute label`: 0 complete, 3 stopped early, 1 log/backend failure, 2 bad input."""
    from tierroute.cascade.labelling import parse_method, reference_tier
    from tierroute.offline.traffic.labelling import LabelOptions, format_report

    url = args.db or settings.querylog.url.get()
    try:
        options = LabelOptions(
            sample=args.sample,
            since=_since(args.since),
            max_spend_usd=args.max_spend_usd,
            reference_tier=args.reference_tier,
            max_output_tokens=args.max_output_tokens or settings.cascade.max_output_tokens,
            concurrency=args.concurrency,
            seed=args.seed,
            method=parse_method(args.method),
        )
        reference_tier(settings, options.reference_tier)
        report = asyncio.run(_label(url, settings, environ, options, args.quiet))
    except ConfigError as exc:
        return _fail("label", exc)
    except QueryLogError as exc:
        return _unreadable("label", url, exc)
    except ProviderError as exc:
        return _fail("label", f"the backend failed: {exc}", EXIT_UNREADABLE)
    _print(report.as_dict(), format_report(report), args.json)
    return EXIT_OK if report.complete else EXIT_ALARM


# -- export ----------------------------------------------------------------------------------


def add_export_parser(subparsers: Any) -> None:
    """Register `export` on an argparse subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="write the labelled sample as a recorded-outcome file (train, calibrate, eval)",
        description="Write every logged question whose tiers are all labelled as a "
        "recorded-outcome file in the shared data schema: the reference judge's verdict as "
        "`correct`, with each tier's answer, tokens and cost, so train, calibrate and eval "
        "read it like dev and the replay backend can serve it. Exit 0 written, 2 nothing "
        "to export or a bad path, 1 the log cannot be read.",
    )
    _db_argument(parser)
    parser.add_argument(
        "--labeled",
        action="store_true",
        required=True,
        help="export the labelled sample (the only export there is; stated for clarity)",
    )
    parser.add_argument("--out", type=Path, required=True, help="FILE.jsonl.gz to write")
    _json_argument(parser)
    parser.set_defaults(func=run_export_command)


async def _export(url: str, settings: Settings, out: Path) -> Any:
    from tierroute.offline.traffic.export import export_labelled

    async with _reading(url) as store:
        return await export_labelled(store, settings, out)


def run_export_command(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]
) -> int:
    """`tierroute export`: 0 written, 2 nothing to export, 1 the log cannot be read."""
    url = args.db or settings.querylog.url.get()
    try:
        summary = asyncio.run(_export(url, settings, args.out))
    except ConfigError as exc:
        return _fail("export", exc)
    except QueryLogError as exc:
        return _unreadable("export", url, exc)
    except OSError as exc:
        return _fail("export", f"cannot write {args.out}: {exc}")
    text = (
        f"wrote {summary.records} labelled questions to {summary.path} "
        f"(min tier correct {summary.min_tier_correct}; {summary.incomplete} questions not "
        f"fully labelled left out; {summary.unavailable_verdicts} unavailable verdicts "
        "counted as wrong)"
    )
    _print(summary.as_dict(), text, args.json)
    return EXIT_OK
