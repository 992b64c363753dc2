"""The operator's commands: `audit`, `drift`, `retrain`, `rollback`, `models` and `adapt`.

`__main__` registers them with `add_audit_parser(sub)`, `add_drift_parser(sub)`,
`add_retrain_parser(sub)`, `add_rollback_parser(sub)`, `add_models_parser(sub)` and
`add_adapt_parser(sub)`; each sets `func(args) -> int`. Registering imports nothing heavy.
The parsed namespace may carry `settings` (and `environ`) set by a caller; otherwise they
are read from the process environment when the command runs.

Exit codes, for schedulers: 0 all well (retrain: promoted); 3 the alarm (audit above the
misroute rate, drift shifted, retrain refused the candidate); 4 nothing to audit (adapt: too
few logged decisions); 1 the log or the backend cannot be read or reached; 2 bad arguments
or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tierroute.errors import ConfigError, ModelLoadError, NotFound, ProviderError
from tierroute.offline.cli.args import add_data_argument, add_folds_argument
from tierroute.offline.cli.tenant_report import run_tenant_report
from tierroute.outcomes import default_data_path
from tierroute.querylog import (
    QueryLogError,
    Report,
    ReportBuilder,
    Store,
    TierLabel,
    open_store,
)
from tierroute.querylog.records import utc_now
from tierroute.querylog.report import format_table
from tierroute.querylog.savings import SavingsBuilder
from tierroute.querylog.store import redact_url
from tierroute.settings import Settings

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_UNREADABLE = 1
EXIT_USAGE = 2
EXIT_ALARM = 3
EXIT_NOTHING = 4
DEFAULT_SINCE = "7d"


def _since(text: str | None) -> datetime | None:

    return None if text is None or text == "all" else parse_since(text, utc_now())


def _db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="sqlite:///PATH or postgresql://... (default: TIERROUTE_DB_URL or the config)",
    )


def _registry_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", type=Path, default=None, help="model registry directory")


def _json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _since_argument(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--since",
        default=default,
        help="start of the window: ISO date/datetime (UTC), a duration ago such as 7d or "
        f"12h, or 'all' (default {default})",
    )


async def open_log(url: str) -> Store:
    """Open the query log at `url` for reading, bringing an older schema up to date.

    QueryLogError when there is no log there. A log at an older schema version gets the
    missing migrations (they only add nullable columns), since these commands read them.
    """
    from tierroute.querylog import migrations

    store = open_store(url)
    try:
        version = await store.schema_version()
        if version == 0:
            raise QueryLogError(f"no query log at {store.display_url}")
        dialect = "sqlite" if url.lower().startswith("sqlite") else "postgresql"
        if version < migrations.load(dialect)[-1].version:
            logger.info("query log at %s is at schema version %s; migrating", url, version)
            await store.migrate()
    except BaseException:
        await store.aclose()
        raise
    return store


@asynccontextmanager
async def _reading(url: str) -> AsyncIterator[Store]:
    """The query log at `url`, opened as `open_log` does and closed on the way out."""
    store = await open_log(url)
    try:
        yield store
    finally:
        await store.aclose()


def _data_path(args: argparse.Namespace, environ: Mapping[str, str]) -> Path:
    return Path(args.data) if args.data is not None else default_data_path(environ)


def _fail(command: str, message: object, code: int = EXIT_USAGE) -> int:
    """Say on stderr why `tierroute <command>` stopped; return its exit code."""
    print(f"tierroute {command}: {message}", file=sys.stderr)
    return code


def _unreadable(command: str, url: str, exc: QueryLogError) -> int:
    return _fail(command, f"cannot read {redact_url(url)}: {exc}", EXIT_UNREADABLE)


def _print(document: Mapping[str, Any] | None, text: str, as_json: bool) -> None:
    print(json.dumps(document, indent=2) if as_json and document is not None else text)


def _registry(args: argparse.Namespace, settings: Settings) -> Any:
    from tierroute.model import ModelRegistry

    root = getattr(args, "registry", None) or settings.routing.registry_dir
    if root is None or not str(root):
        raise ConfigError("no model registry: pass --registry DIR or set routing.registry_dir")
    return ModelRegistry(Path(root), seed=settings.routing.model_dir)


# -- audit -----------------------------------------------------------------------------------


def add_audit_parser(subparsers: Any) -> None:
    """Register `audit` on an argparse subparsers object."""
    from tierroute.offline.audit import DEFAULT_EXAMPLES, DEFAULT_MAX_MISROUTE_RATE, DEFAULT_SAMPLE

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "audit",
        help="re-judge a sample of recently cheap-answered queries; exit 3 above the rate",
        description="Re-judge a sample of recent cheap-tier answers (stratified by query "
        "type) with the tier-up judge through the configured backend. Needs audit samples "
        "(querylog.audit_sample_rate > 0). Exit 0 within the rate, 3 above it, 4 when "
        "nothing could be judged, 1 when the log or backend fails, 2 on bad arguments.",
    )
    _db_argument(parser)
    _since_argument(parser, DEFAULT_SINCE)
    parser.add_argument("--sample", type=int, default=DEFAULT_SAMPLE, help="answers to judge")
    parser.add_argument(
        "--max-misroute-rate",
        type=float,
        default=DEFAULT_MAX_MISROUTE_RATE,
        help="alert (exit 3) above this misroute rate (default %(default)s)",
    )
    parser.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES, help="examples shown")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    _json_argument(parser)
    parser.set_defaults(func=run_audit_command)


async def _audit(url: str, settings: Settings, environ: Mapping[str, str], options: Any) -> Any:
    from tierroute.offline.audit import run_audit
    from tierroute.providers import build_backend

    async with _reading(url) as store:
        backend = build_backend(settings, environ)
        try:
            return await run_audit(store, backend.provider, settings, options)
        finally:
            await backend.aclose()


def run_audit_command(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]
) -> int:
    """`tierroute audit`: print the audit; the exit code says whether to alert."""
    from tierroute.offline.audit import AuditOptions, format_report

    try:
        url = args.db or settings.querylog.url.get()
        options = AuditOptions(
            since=_since(args.since),
            sample=args.sample,
            max_misroute_rate=args.max_misroute_rate,
            seed=args.seed,
            examples=args.examples,
        )
    except ConfigError as exc:
        return _fail("audit", exc)
    try:
        report = asyncio.run(_audit(url, settings, environ, options))
    except ConfigError as exc:
        return _fail("audit", exc)
    except QueryLogError as exc:
        return _unreadable("audit", url, exc)
    except ProviderError as exc:
        return _fail("audit", f"the judge backend failed: {exc}", EXIT_UNREADABLE)
    _print(report.as_dict(), format_report(report), args.json)
    if report.judged == 0:
        return _fail("audit", "nothing was judged", EXIT_NOTHING)
    return EXIT_ALARM if report.above_threshold else EXIT_OK


# -- drift -----------------------------------------------------------------------------------


def add_drift_parser(subparsers: Any) -> None:
    """Register `drift` on an argparse subparsers object."""
    from tierroute.offline.drift import (
        DEFAULT_MAX_COVERAGE_DROP,
        DEFAULT_MAX_TV,
        DEFAULT_MAX_UNFAMILIAR_RISE,
        DEFAULT_MIN_RECORDS,
    )

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "drift",
        help="compare recent traffic with the training data; exit 3 when it shifted",
        description="Predicted tier mix, query-type mix and vocabulary coverage of recent "
        "traffic against the model's training data. Exit 0 when nothing shifted, 3 when "
        "something did, 1 when the log cannot be read, 2 on bad arguments.",
    )
    _db_argument(parser)
    add_data_argument(parser, what="the training data")
    _since_argument(parser, DEFAULT_SINCE)
    parser.add_argument(
        "--model", type=Path, default=None, help="model bundle (default: the served one)"
    )
    _registry_argument(parser)
    parser.add_argument("--max-tv", type=float, default=DEFAULT_MAX_TV, help="mix threshold")
    parser.add_argument(
        "--max-coverage-drop",
        type=float,
        default=DEFAULT_MAX_COVERAGE_DROP,
        help="coverage threshold, as a fraction (0.10 = 10 points)",
    )
    parser.add_argument(
        "--max-unfamiliar-rise",
        type=float,
        default=DEFAULT_MAX_UNFAMILIAR_RISE,
        help="unfamiliar-share threshold, as a fraction (0.05 = 5 points)",
    )
    parser.add_argument(
        "--min-records",
        type=int,
        default=DEFAULT_MIN_RECORDS,
        help="records a measure needs before it can say anything",
    )
    _json_argument(parser)
    parser.set_defaults(func=run_drift_command)


def _model_dir(args: argparse.Namespace, settings: Settings) -> Path:
    if args.model is not None:
        return Path(args.model)
    if args.registry is not None or settings.routing.registry_dir is not None:
        return Path(_registry(args, settings).promoted_dir())
    return settings.routing.model_dir


async def _drift(
    url: str,
    settings: Settings,
    environ: Mapping[str, str],
    args: argparse.Namespace,
    thresholds: Any,
) -> Any:
    from tierroute.model import load_model
    from tierroute.offline.drift import compare, recent_traffic, reference_from_file

    model_dir = _model_dir(args, settings)
    tier_names = [t.name for t in settings.tiers]
    # Reading the model and routing the training prompts take a second or two: off the loop.
    loaded = await asyncio.to_thread(load_model, model_dir, len(tier_names))
    data = _data_path(args, environ)
    reference = await asyncio.to_thread(
        reference_from_file, data, loaded.scorer, loaded.vocabulary, tier_names
    )
    since = _since(args.since)
    async with _reading(url) as store:
        recent = await recent_traffic(store, loaded.scorer, tier_names, since=since)
    return compare(reference, recent, thresholds, since=since)


def run_drift_command(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]
) -> int:
    """`tierroute drift`: print the measures; exit 3 when any shifted."""
    from tierroute.offline.drift import DriftThresholds, format_report

    try:
        url = args.db or settings.querylog.url.get()
        thresholds = DriftThresholds(
            args.max_tv, args.max_coverage_drop, args.min_records, args.max_unfamiliar_rise
        )
        _since(args.since)
    except ConfigError as exc:
        return _fail("drift", exc)
    try:
        report = asyncio.run(_drift(url, settings, environ, args, thresholds))
    except (ConfigError, ModelLoadError, NotFound, OSError) as exc:
        return _fail("drift", exc)
    except QueryLogError as exc:
        return _unreadable("drift", url, exc)
    _print(report.as_dict(), format_report(report), args.json)
    return EXIT_ALARM if report.shifted else EXIT_OK


# -- retrain ---------------------------------------------------------------------------------


def add_retrain_parser(subparsers: Any) -> None:
    """Register `retrain` on an argparse subparsers object."""
    from tierroute.offline.retrain import (
        DEFAULT_HOLDOUT,
        DEFAULT_MARGIN_COST,
        DEFAULT_MARGIN_QUALITY,
    )

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "retrain",
        help="train a candidate from the log and the data; promote it only if not worse",
        description="Without --data, from the log alone: train a candidate on the "
        "questions `tierroute label` labelled plus the calls judge verdicts and feedback "
        "label, hold out the most recent labelled questions by time, and compare it there "
        "with the served model. With --data, label logged calls from judge verdicts and "
        "feedback, train on them plus that file, and compare on a fixed held-out split of "
        "it. Either way the candidate is promoted into the registry only if it is not worse "
        "by the margins. Exit 0 promoted, 3 not promoted, 1 when the log cannot be read, 2 "
        "on bad arguments. Needs the `train` extra.",
    )
    _db_argument(parser)
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="a recorded-outcome file to train and gate on with the log (default: the log alone)",
    )
    _registry_argument(parser)
    _since_argument(parser, "all")
    parser.add_argument(
        "--margin-quality",
        type=float,
        default=DEFAULT_MARGIN_QUALITY,
        help="how much lower (absolute) the candidate's quality may be (default %(default)s)",
    )
    parser.add_argument(
        "--margin-cost",
        type=float,
        default=DEFAULT_MARGIN_COST,
        help="how much higher (relative) its cost per query may be (default %(default)s)",
    )
    parser.add_argument(
        "--holdout", type=float, default=DEFAULT_HOLDOUT, help="held-out share of the data"
    )
    add_folds_argument(parser, what="calibration folds")
    parser.add_argument("--seed", type=int, default=0, help="held-out split seed")
    parser.add_argument("--dry-run", action="store_true", help="compare, never promote")
    _json_argument(parser)
    parser.set_defaults(func=run_retrain_command)


async def _labels(url: str, settings: Settings, since: datetime | None) -> Any:
    from tierroute.offline.retrain import collect_labels

    async with _reading(url) as store:
        return await collect_labels(store, settings, since)


async def _log_data(url: str, settings: Settings, since: datetime | None) -> Any:
    from tierroute.offline.retrain import collect_labels
    from tierroute.offline.traffic.retrain_log import log_training_data

    async with _reading(url) as store:
        log = await collect_labels(store, settings, since)
        labelled, extra = await log_training_data(store, settings, log)
    return log, labelled, extra


def run_retrain_command(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]
) -> int:
    """`tierroute retrain`: print the comparison; exit 0 when promoted, 3 when not."""
    from tierroute.offline.retrain import Margins, RetrainOptions, format_result, retrain

    try:
        url = args.db or settings.querylog.url.get()
        registry = _registry(args, settings)
        options = RetrainOptions(
            since=_since(args.since),
            margins=Margins(args.margin_quality, args.margin_cost),
            holdout=args.holdout,
            folds=args.folds,
            seed=args.seed,
            dry_run=args.dry_run,
        )
    except ConfigError as exc:
        return _fail("retrain", exc)
    try:
        if args.data is None:
            log, labelled, extra = asyncio.run(_log_data(url, settings, options.since))
        else:
            log = asyncio.run(_labels(url, settings, options.since))
    except QueryLogError as exc:
        return _unreadable("retrain", url, exc)
    try:
        if args.data is None:
            from tierroute.offline.traffic.retrain_log import retrain_from_log

            result = retrain_from_log(
                settings, log, labelled, extra, registry=registry, options=options
            )
        else:
            result = retrain(settings, log, Path(args.data), registry, options)
    except (ConfigError, ModelLoadError, NotFound, OSError) as exc:
        return _fail("retrain", exc)
    except ImportError as exc:
        return _fail("retrain", f"needs the `train` extra: {exc}")
    _print(result.as_dict(), format_result(result), args.json)
    # A dry run answers the same question without acting on it.
    passed = result.promoted or (options.dry_run and result.decision.promote)
    return EXIT_OK if passed else EXIT_ALARM


# -- the registry ----------------------------------------------------------------------------


def add_rollback_parser(subparsers: Any) -> None:
    """Register `rollback` on an argparse subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "rollback",
        help="promote the model version promoted before the current one again",
        description="Pop the registry's last promotion. Servers pick the change up through "
        "their registry watcher (routing.registry_poll_s) or a ReloadModel call.",
    )
    _registry_argument(parser)
    _json_argument(parser)
    parser.set_defaults(func=run_rollback_command)


def run_rollback_command(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]
) -> int:
    """`tierroute rollback`: 0 when rolled back, 2 when there is nothing to roll back to."""
    from tierroute.model import registry_summary

    try:
        registry = _registry(args, settings)
        before = registry.state().promoted
        after = registry.rollback(note="tierroute rollback").promoted
    except (ConfigError, NotFound) as exc:
        return _fail("rollback", exc)
    _print(registry_summary(registry), f"rolled back {before} -> {after}", args.json)
    return EXIT_OK


def add_models_parser(subparsers: Any) -> None:
    """Register `models` on an argparse subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "models",
        help="list the model registry; add a bundle or promote a version",
        description="Without options, list the registry's versions, the promoted one and "
        "the history. --add copies a bundle in; --promote makes a held version current.",
    )
    _registry_argument(parser)
    parser.add_argument("--add", type=Path, default=None, metavar="BUNDLE", help="add a bundle")
    parser.add_argument("--promote", default=None, metavar="VERSION", help="promote a version")
    _json_argument(parser)
    parser.set_defaults(func=run_models_command)


def run_models_command(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]
) -> int:
    """`tierroute models`: 0 on success, 2 on a bad bundle, version or registry."""
    from tierroute.model import registry_summary

    try:
        registry = _registry(args, settings)
        if args.add is not None:
            print(f"added {registry.add(args.add)}", file=sys.stderr)
        if args.promote is not None:
            registry.promote(args.promote, note="tierroute models --promote")
        summary = registry_summary(registry)
    except (ConfigError, ModelLoadError, NotFound) as exc:
        return _fail("models", exc)
    lines = [f"registry {summary['registry']}", f"promoted {summary['promoted']}"]
    lines += [
        f"  {v}{'  (promoted)' if v == summary['promoted'] else ''}" for v in summary["versions"]
    ]
    lines.append("history (oldest first): " + " -> ".join(summary["history"]))
    _print(summary, "\n".join(lines), args.json)
    return EXIT_OK


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """A start time from an ISO date or datetime (UTC unless it says) or a duration ago.

    Durations are a number and one of s, m, h, d, w: `7d` is seven days before `now`.
    """
    match = _DURATION.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        return now - timedelta(**{_UNITS[unit]: amount})
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigError(
            f"--since {text!r} is neither an ISO date/datetime nor a duration like 7d or 12h"
        ) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def add_report_parser(subparsers: Any) -> None:
    """Register `report` on an argparse subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="per-tier and per-model figures from the query log",
        description=(
            "Query count, share of traffic, average and total cost, average rating, p95 "
            "tokens and escalation rate per tier and per model, and the cheap-tier "
            "opportunity, from the query log."
        ),
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="sqlite:///PATH or postgresql://... (default: TIERROUTE_DB_URL or the config)",
    )
    parser.add_argument(
        "--since",
        default=None,
        help="start of the window: ISO date/datetime (UTC) or a duration ago such as 7d, 12h",
    )
    parser.add_argument(
        "--tenant",
        metavar="ID",
        default=None,
        help="report one tenant's spend against its budget (window, reserved, when it "
        "frees) and its last minute against its rate limits, from the tenant state",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run_report)


async def build_report(
    url: str, tiers: tuple[str, ...], since: datetime | None, reference: str = ""
) -> Report:
    """Read the log at `url` (never migrating it) and summarise it, with the savings the
    labelled sample shows against `reference` (default: the top tier)."""
    store = open_store(url)
    try:
        if await store.schema_version() == 0:
            raise QueryLogError(f"no query log at {store.display_url}")
        # Feedback and labels first (they are small): each query is then counted as it
        # streams past.
        builder = ReportBuilder(tiers, await store.fetch_feedback(since=since))
        labels: dict[str, dict[str, TierLabel]] = defaultdict(dict)
        for label in await store.fetch_tier_labels():
            labels[label.request_id][label.tier] = label
        savings = SavingsBuilder(tiers, reference or tiers[-1], labels) if tiers else None
        async for record in store.iter_queries(since=since):
            builder.add(record)
            if savings is not None:
                savings.add(record)
    finally:
        await store.aclose()
    return builder.build(since=since, savings=None if savings is None else savings.build())


def run_report(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]) -> int:
    """Print the report; 0 on success, 1 when the log cannot be read, 2 on bad arguments."""
    if args.tenant is not None:
        return run_tenant_report(args.db, settings, args.tenant, as_json=args.json)
    try:
        url = args.db or settings.querylog.url.get()
        since = None if args.since is None else parse_since(args.since, utc_now())
    except ConfigError as exc:
        print(f"tierroute report: {exc}", file=sys.stderr)
        return 2
    tiers = tuple(t.name for t in settings.tiers)
    try:
        report = asyncio.run(build_report(url, tiers, since, settings.routing.reference_tier))
    except ConfigError as exc:
        print(f"tierroute report: {exc}", file=sys.stderr)
        return 2
    except QueryLogError as exc:
        print(f"tierroute report: cannot read {redact_url(url)}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=False))
    else:
        print(format_table(report))
    return 0


# -- adapt -----------------------------------------------------------------------------------


def add_adapt_parser(subparsers: Any) -> None:
    """Register `adapt` on an argparse subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "adapt",
        help="re-solve the served model's operating points for the traffic in the query log",
        description="Read the value policy's estimates logged for each planned Cascade in "
        "the window (corrected where tier labels, feedback or judge verdicts say whether an "
        "answer was right), solve every operating point of the registry's promoted model "
        "again on them, add the result to the registry as a new version and promote it. "
        "Prints expected quality and cost before and after per operating point. Exit 0 "
        "promoted (or nothing moved), 4 too few logged decisions, 1 when the log cannot be "
        "read, 2 on bad arguments or a model without a value policy. See docs/operations.md.",
    )
    _db_argument(parser)
    _registry_argument(parser)
    _since_argument(parser, DEFAULT_SINCE)
    parser.add_argument(
        "--min-decisions",
        type=int,
        default=None,
        help="fewer planned Cascades than this in the window change nothing "
        "(default: adapt.min_decisions)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print, write nothing")
    _json_argument(parser)
    parser.set_defaults(func=run_adapt_command)


async def _adapt(
    url: str, registry: Any, settings: Settings, args: argparse.Namespace, min_decisions: int
) -> Any:
    from tierroute.model.adapt import adapt

    async with _reading(url) as store:
        return await adapt(
            store,
            registry,
            settings,
            since=_since(args.since),
            min_decisions=min_decisions,
            dry_run=args.dry_run,
        )


def run_adapt_command(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]
) -> int:
    """`tierroute adapt`: print before and after; 0 done, 4 too few decisions."""
    try:
        url = args.db or settings.querylog.url.get()
        registry = _registry(args, settings)
        _since(args.since)
        minimum = settings.adapt.min_decisions if args.min_decisions is None else args.min_decisions
        if minimum < 1:
            raise ConfigError(f"--min-decisions must be at least 1, not {minimum}")
    except ConfigError as exc:
        return _fail("adapt", exc)
    try:
        result = asyncio.run(_adapt(url, registry, settings, args, minimum))
    except (ConfigError, ModelLoadError, NotFound, OSError) as exc:
        return _fail("adapt", exc)
    except QueryLogError as exc:
        return _unreadable("adapt", url, exc)
    _print(result.as_dict(), result.format(), args.json)
    return EXIT_NOTHING if result.rows < minimum else EXIT_OK
