"""Builds and runs the tierroute gRPC server: load -> warm up -> SERVING -> drain -> stop.

The Messages API endpoint (`tierroute.api.http`) runs in the same event loop over the same
router, engine, tenancy, query log and in-flight bound, binds with the gRPC port and drains
with it.
`TierRouteServer` is the one factory that `tierroute serve` and the tests both use. Its
collaborators (router model, provider, tracer provider) can be injected; by default they
are built from the settings.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import shutil
import signal
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

from tierroute import observability
from tierroute.api import ext_proc
from tierroute.api.admission import AdmissionInterceptor
from tierroute.api.calllog import CallLog
from tierroute.api.health import SERVICE_NAME, BreakerHealthServicer
from tierroute.api.http import HttpServer, MessagesEdge
from tierroute.api.live_labels import LiveLabeller, close_quietly
from tierroute.api.preflight import check_paths
from tierroute.api.security import AuthInterceptor, TokenStore, server_credentials
from tierroute.api.servicer import TierRouterServicer
from tierroute.api.status import ErrorMappingInterceptor, ServerInterceptor
from tierroute.cascade import CascadeEngine
from tierroute.errors import ConfigError, ModelLoadError, NotFound
from tierroute.model import (
    AdaptLoop,
    Loader,
    ModelRegistry,
    ModelReloader,
    load_model,
    startup_model,
)
from tierroute.observability import Metrics
from tierroute.providers import Backend, Provider, build_backend
from tierroute.querylog import (
    QueryLog,
    QueryLogClient,
    QueryLogWriter,
    WriterProcess,
    worker_spool_path,
)
from tierroute.routing import Router, Scorer
from tierroute.settings import Settings
from tierroute.tenancy import Reloader, Tenancy, TenantBook, WatchedFile
from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

WARM_UP_QUERY = "warm-up: what is the capital of France?"


class TierRouteServer:
    """The gRPC server with its health, reflection and error-mapping wiring."""

    def __init__(
        self,
        settings: Settings,
        *,
        scorer: Scorer | None = None,
        provider: Provider | None = None,
        forward_fault_headers: bool = False,
        environ: Mapping[str, str] | None = None,
        interceptors: Sequence[ServerInterceptor] = (),
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        querylog: QueryLog | None = None,
        model_loader: Loader | None = None,
        querylog_address: Path | None = None,
        worker_slot: int = 0,
        reuse_port: bool = False,
    ) -> None:
        self.settings = settings
        # The default loader prices the value policy with the configured tiers' prices.
        self._model_loader = model_loader or functools.partial(load_model, tiers=settings.tiers)
        # An injected query-log writer is the caller's to start and close; a built one is ours.
        self._querylog = querylog
        self._own_querylog: QueryLog | None = None
        # A worker of `serve --workers N` is handed its group's writer process; a lone
        # server starts its own (querylog.writer = "process") in a scratch directory.
        self._querylog_address = querylog_address
        self._worker_slot = worker_slot
        self._writer_process: WriterProcess | None = None
        self._run_dir: Path | None = None
        self._reuse_port = reuse_port
        self._scorer = scorer
        # No tracer provider means no tracing at all: not even the RPC span's overhead.
        self._tracer_provider = tracer_provider
        self._tracer = observability.get_tracer(tracer_provider)
        self.metrics = Metrics(meter_provider, provider_name="anthropic")
        # An injected provider is the caller's to close; a built backend is ours.
        self._provider = provider
        self._forward_faults = forward_fault_headers
        self._environ = dict(environ) if environ is not None else {}
        self._backend: Backend | None = None
        self.engine: CascadeEngine | None = None
        self._extra_interceptors = tuple(interceptors)
        self._server: aio.Server | None = None
        self._health = BreakerHealthServicer()
        self.router: Router | None = None
        # Hot reload and rollback of the router model (ReloadModel, RollbackModel, watcher).
        self.models: ModelReloader | None = None
        self._watcher: asyncio.Task[None] | None = None
        # `[adapt] interval_s`: operating points re-solved from this server's own log.
        self.adapter: AdaptLoop | None = None
        self._adapting: asyncio.Task[None] | None = None
        self.port = 0
        self.admission = AdmissionInterceptor(settings.server.max_in_flight)
        # Tenants' limits and state (budgets, rate limits, sessions, request ids).
        self.tenancy: Tenancy | None = None
        self.reloader: Reloader | None = None
        # Live labelling (shadow.label_rate), in the background of this process.
        self.labels: LiveLabeller | None = None
        # The Anthropic Messages API endpoint, when on (http.port, or start's http_port).
        self._http: HttpServer | None = None
        self.http_port = 0

    async def start(
        self, host: str | None = None, port: int | None = None, *, http_port: int | None = None
    ) -> int:
        """Bind, load and warm the model, then report SERVING; returns the bound gRPC port.

        The HTTP endpoint listens on `http_port` when given (0: a free port), else on the
        configured `http.port`, where 0 turns it off; its bound port is `http_port` after.
        """
        cfg = self.settings.server
        # Every file and directory first: a problem is one line naming the setting.
        check_paths(self.settings, model_injected=self._scorer is not None)
        # The registry's promoted version when a registry is configured, else model_dir.
        registry = ModelRegistry.from_settings(self.settings)
        initial = startup_model(self.settings, registry, self._scorer)
        scorer = initial.scorer
        self.router = Router(self.settings, scorer, tracer=self._tracer, metrics=self.metrics)
        self.models = ModelReloader(
            self.router,
            len(self.settings.tiers),
            registry=registry,
            static_dir=self.settings.routing.model_dir,
            initial=initial,
            loader=self._model_loader,
            coverage_sample_rate=self.settings.querylog.coverage_sample_rate,
        )
        # Load and warm before binding: a bad model fails start-up before any port opens.
        self._warm_up(scorer)
        auth = AuthInterceptor.from_settings(self.settings.auth)
        tenancy = Tenancy.from_settings(self.settings)
        self.reloader = self._reloader(auth, tenancy)
        server = aio.server(
            # The RPC span first, so it wraps (and times) everything, refusals included;
            # then admission (the cheapest refusal), then who is calling, then the rest.
            interceptors=[
                *self._tracing_interceptors(),
                self.admission,
                auth,
                *self._extra_interceptors,
                ErrorMappingInterceptor(),
            ],
            options=[
                ("grpc.max_receive_message_length", cfg.max_receive_message_bytes),
                ("grpc.max_send_message_length", cfg.max_send_message_bytes),
                # Workers of one `serve --workers N` share the port; a lone server must
                # not silently share it with an unrelated process.
                ("grpc.so_reuseport", 1 if self._reuse_port else 0),
            ],
            maximum_concurrent_rpcs=cfg.max_concurrent_rpcs or None,
        )
        # Bind before starting the query log and the backend: a port in use fails start-up
        # with nothing left running.
        address = f"{host or cfg.host}:{cfg.port if port is None else port}"
        credentials = server_credentials(self.settings.tls)
        try:
            if credentials is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            await server.stop(None)
            raise ConfigError(
                f"cannot listen on {address}: the port is in use or the address is not local"
            ) from exc
        try:
            # Before the query log and the backend start, like the gRPC port above.
            self._bind_http(host, http_port)
            self.tenancy = tenancy
            await tenancy.start()
            if self._querylog is None and self.settings.querylog.enabled:
                self._own_querylog = await self._open_querylog()
                self._querylog = self._own_querylog
            provider, forward = self._provider, self._forward_faults
            if provider is None:
                self._backend = build_backend(self.settings, self._environ)
                provider, forward = self._backend.provider, self._backend.forwards_fault_headers
            # The engine applies each model's calibrated cascade section itself, per model
            # version, so a hot reload brings its judge rates and speculative bound along.
            self.engine = CascadeEngine(
                self.settings,
                self.router,
                provider,
                tracer=self._tracer,
                metrics=self.metrics,
            )
            await self._health.follow(self.engine.breakers)
            pb_grpc.add_TierRouterServicer_to_server(
                TierRouterServicer(
                    self.settings,
                    self.router,
                    self.engine,
                    tenancy=tenancy,
                    querylog=self._querylog,
                    models=self.models,
                    forward_fault_headers=forward,
                    labels=await self._start_labels(provider),
                ),
                server,
            )
            extra = self._add_edges(server, auth, tenancy, forward, provider)
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            reflection.enable_server_reflection(
                (SERVICE_NAME, *extra, health.SERVICE_NAME, reflection.SERVICE_NAME), server
            )
            await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
            await server.start()
        except BaseException:
            # Nothing started here may outlive a failed start-up: port, writer, backend.
            await self._abandon(server)
            raise
        self._server = server
        _settle_heap()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._watch(registry)
        logger.info("serving on port %s (model %s)", self.port, self.router.model_version)
        return self.port

    async def _start_labels(self, provider: Provider) -> LiveLabeller | None:
        """Live labelling, when `shadow.label_rate` is on and calls are logged."""
        if self.settings.shadow.label_rate > 0 and self._querylog is not None:
            self.labels = LiveLabeller(self.settings, provider)
            await self.labels.start()
        return self.labels

    def _watch(self, registry: ModelRegistry | None) -> None:
        """Start watching the tokens and tenants files, and the registry's promotions."""
        if self.reloader is not None:
            self.reloader.start()
        poll_s = self.settings.routing.registry_poll_s
        if registry is not None and poll_s > 0 and self.models is not None:
            self._watcher = asyncio.create_task(
                self.models.watch(poll_s), name="tierroute-model-watcher"
            )
        # One process of a worker group adapts; the others follow its promotion.
        if registry is not None and self.settings.adapt.interval_s > 0 and self._worker_slot == 0:
            self.adapter = AdaptLoop(self.settings, registry, after=self._serve_adapted)
            self._adapting = asyncio.create_task(self.adapter.run(), name="tierroute-adapt")

    async def _serve_adapted(self, version: str) -> None:
        """Serve the version the adapt loop promoted (no wait for the registry watcher)."""
        if self.models is not None:
            try:
                await self.models.reload(version)
            except (ConfigError, ModelLoadError, NotFound) as exc:
                logger.error("adapted model %s was not loaded: %s", version, exc)

    def _reloader(self, auth: AuthInterceptor, tenancy: Tenancy) -> Reloader:
        """The files that reload on change and on SIGHUP: tokens and tenants' limits."""
        files: list[WatchedFile[Any]] = []
        tokens_file = self.settings.auth.tokens_file
        if tokens_file is not None:
            files.append(
                WatchedFile(
                    tokens_file, "auth.tokens_file", TokenStore.load, auth.authenticator.swap_store
                )
            )
        tenants_file = self.settings.tenancy.tenants_file
        if tenants_file is not None:
            files.append(
                WatchedFile(
                    tenants_file, "tenancy.tenants_file", TenantBook.load, tenancy.swap_book
                )
            )
        return Reloader(files, self.settings.tenancy.reload_poll_s)

    def reload_files(self) -> None:
        """Reload the tokens and tenants files now (SIGHUP); a bad file keeps the old one."""
        if self.reloader is not None:
            self.reloader.reload_all()

    async def _open_querylog(self) -> QueryLog:
        cfg = self.settings.querylog
        address = self._querylog_address
        shadow = self.settings.shadow.keeps_text
        if address is None and cfg.writer == "thread":
            writer = QueryLogWriter.from_config(cfg, keep_shadow_text=shadow)
            await writer.start()
            return writer
        if address is None:
            self._run_dir = Path(tempfile.mkdtemp(prefix="tierroute-"))
            self._writer_process = WriterProcess(cfg, self._run_dir, keep_shadow_text=shadow)
            await asyncio.to_thread(self._writer_process.start)
            address = self._writer_process.address
        client = QueryLogClient(
            cfg,
            address,
            spool_path=worker_spool_path(cfg, self._worker_slot),
            keep_shadow_text=shadow,
        )
        await client.start()
        return client

    async def _close_querylog(self) -> None:
        if self._own_querylog is not None:
            await self._own_querylog.close(self.settings.querylog.close_timeout_s)
            self._own_querylog = self._querylog = None
        # The writer process last: it drains what the client sent it to the database.
        if self._writer_process is not None:
            await asyncio.to_thread(self._writer_process.stop)
            self._writer_process = None
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    @property
    def writer_process(self) -> WriterProcess | None:
        """The query-log writer process this server started (None: a group's, or none)."""
        return self._writer_process

    def _add_edges(
        self,
        server: aio.Server,
        auth: AuthInterceptor,
        tenancy: Tenancy,
        forward: bool,
        provider: Provider,
    ) -> tuple[str, ...]:
        """Envoy's external processor on the gRPC port and the Messages API on the HTTP one,
        over the same router, engine, tenancy and query log; the extra gRPC service names."""
        assert self.router is not None
        assert self.engine is not None
        extra = ext_proc.add_to_server(server, self.settings, self.router, self._querylog, tenancy)
        if self._http is None:
            return extra
        edge = MessagesEdge(
            self.settings,
            self.router,
            self.engine,
            tenancy=tenancy,
            calls=CallLog(self.settings, self._querylog, self.models, self.labels),
            authenticator=auth.authenticator,
            admission=self.admission,
            provider=provider,
            forward_fault_headers=forward,
        )
        self._http.start(edge.app(self._tracer_provider))
        return extra

    def _bind_http(self, host: str | None, http_port: int | None) -> None:
        """Listen for HTTP when it is on; ConfigError when its port cannot be had."""
        port = self.settings.http.port if http_port is None else http_port
        if http_port is None and port == 0:
            return
        http_host = self.settings.http.host or host or self.settings.server.host
        self._http = HttpServer()
        try:
            # Workers of `serve --workers N` share the HTTP port as they share the gRPC one.
            self.http_port = self._http.bind(http_host, port, reuse_port=self._reuse_port)
        except ConfigError:
            self._http = None
            raise

    async def _abandon(self, server: aio.Server) -> None:
        await server.stop(None)
        if self._http is not None:
            await self._http.stop(0)
            self._http = None
        if self.tenancy is not None:
            await self.tenancy.aclose()
            self.tenancy = None
        await close_quietly(self.labels)
        self.labels = None
        await self._close_querylog()
        if self._backend is not None:
            await self._backend.aclose()
            self._backend = None

    def _tracing_interceptors(self) -> list[ServerInterceptor]:
        if self._tracer_provider is None:
            return []
        # Health probes and reflection would flood the trace store with empty traces.
        untraced = filters.any_of(
            filters.service_name(health.SERVICE_NAME),
            filters.service_prefix("grpc.reflection."),
        )
        # The instrumentation package ships no type hints (see the mypy overrides).
        interceptor: ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=self._tracer_provider, filter_=filters.negate(untraced)
        )
        return [interceptor]

    def _warm_up(self, scorer: Scorer) -> None:
        # The first onnxruntime run costs milliseconds; pay it before reporting SERVING.
        warm = getattr(scorer, "warm_up", None)
        if callable(warm):
            warm()
        else:
            scorer.predict_proba(WARM_UP_QUERY)

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ("", SERVICE_NAME):
            await self._health.set(name, status)

    async def set_serving(self, serving: bool) -> None:
        """Report the service SERVING or NOT_SERVING (a worker group's health, all workers)."""
        if self._server is not None:
            await self._set_health(
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )

    async def set_health_of(
        self, name: str, status: health_pb2.HealthCheckResponse.ServingStatus
    ) -> None:
        """Report `status` under the health service name `name` (a worker of a group)."""
        if self._server is not None:
            await self._health.set(name, status)

    async def stop(self, grace_s: float | None = None, drain_s: float = 0.0) -> None:
        """NOT_SERVING, refuse new calls, let calls in flight finish within the grace period.

        With `drain_s`, the server keeps serving for that long after reporting NOT_SERVING,
        so that health-checking clients and load balancers move their new calls elsewhere
        before this replica stops accepting them.
        """
        if self._server is None:
            return
        for task in (self._watcher, self._adapting):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        self._watcher = self._adapting = None
        if self.reloader is not None:
            await self.reloader.stop()
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if drain_s > 0:
            await asyncio.sleep(drain_s)
        await self._health.close()
        grace = self.settings.server.grace_period_s if grace_s is None else grace_s
        # New calls on open connections are refused UNAVAILABLE by admission control while
        # the listeners stay up for the calls in flight; gRPC's own stop would instead cancel
        # a call that races its listener closing. Then both transports stop within what is
        # left of the grace period.
        loop = asyncio.get_running_loop()
        ends = loop.time() + grace
        await self.admission.drain(grace)
        grace = max(0.0, ends - loop.time())
        # Both transports drain together, within the one grace period.
        await asyncio.gather(
            self._server.stop(grace), self._http.stop(grace) if self._http else asyncio.sleep(0)
        )
        self._server = self._http = None
        # After the drain: every call in flight has settled its spend by now.
        if self.tenancy is not None:
            await self.tenancy.aclose()
            self.tenancy = None
        # Live labelling is background work: cancelled, never waited for.
        await close_quietly(self.labels)
        self.labels = None
        # After the drain: every call in flight has submitted its record by now.
        await self._close_querylog()
        if self._backend is not None:
            await self._backend.aclose()
            self._backend = None

    @property
    def backend(self) -> Backend | None:
        """The backend this server built (None when a provider was injected)."""
        return self._backend

    async def wait_for_termination(self) -> None:
        """Block until the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    *,
    environ: Mapping[str, str],
    http_port: int | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully.

    `http_port` (None: from the settings, where 0 is off) is where the HTTP endpoint listens.
    """
    tel = observability.setup(settings, environ)
    try:
        server = TierRouteServer(
            settings,
            environ=environ,
            tracer_provider=tel.tracer_provider,
            meter_provider=tel.meter_provider,
        )
        bound = await server.start(host, port, http_port=http_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # SIGHUP reloads the tokens and tenants files without dropping a call. Installed
        # before the line below, which tells whoever waits for it that signals are safe.
        loop.add_signal_handler(signal.SIGHUP, server.reload_files)
        address = host or settings.server.host
        if server.http_port:
            http_host = settings.http.host or address
            print(f"tierroute serving HTTP on {http_host}:{server.http_port}", flush=True)
        print(f"tierroute serving on {address}:{bound}", flush=True)
        await stop.wait()
        logger.info(
            "shutting down; drain %ss, grace period %ss",
            settings.server.drain_delay_s,
            settings.server.grace_period_s,
        )
        await server.stop(drain_s=settings.server.drain_delay_s)
    finally:
        # Flushing blocks on the exporter's network calls; keep the loop free meanwhile.
        await asyncio.to_thread(tel.shutdown)


def _settle_heap() -> None:
    """Move what start-up built (model vocabularies, settings, modules) out of the cyclic
    collector's reach. Every full collection would otherwise walk it again, with the event
    loop stopped (route_bench's `server_full_collection_ms`: 137.5 ms before, 0.3 ms after,
    docs/BENCHMARKS.md). Frozen objects are still freed when unreferenced; a collection
    first clears start-up's garbage cycles so none is frozen."""
    gc.collect()
    gc.freeze()
