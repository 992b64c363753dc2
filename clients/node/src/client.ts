/**
 * TypeScript client for the tierroute gRPC service, on @grpc/grpc-js.
 *
 * `TierRouteClient` offers `route`, `cascade` and `feedback` as promises returning small
 * typed results, and `cascadeStream` as an async iterable of a cascade's events, each with
 * a default deadline per call (gRPC has none of its own),
 * `round_robin` over every address the target resolves to, and retries of the idempotent
 * `Route` through the gRPC service config. Failed calls reject with `TierRouteError`,
 * which carries the gRPC status code. Message types come from `npm run gen`, which
 * generates them from the contract in ../../protos.
 */
import { isIP } from "node:net";
import { join } from "node:path";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { service as healthService } from "grpc-health-check";

import type { ProtoGrpcType } from "./generated/tierroute";
import type { CascadeEvent__Output } from "./generated/tierroute/v1/CascadeEvent";
import type { CascadeRequest } from "./generated/tierroute/v1/CascadeRequest";
import type { CascadeResponse__Output } from "./generated/tierroute/v1/CascadeResponse";
import type { ChatMessage } from "./generated/tierroute/v1/ChatMessage";
import type {
  ContentBlock,
  ContentBlock__Output,
} from "./generated/tierroute/v1/ContentBlock";
import type { MediaSource } from "./generated/tierroute/v1/MediaSource";
import type { Tool } from "./generated/tierroute/v1/Tool";
import type { ToolChoice } from "./generated/tierroute/v1/ToolChoice";
import type { FeedbackRequest } from "./generated/tierroute/v1/FeedbackRequest";
import type { Hop__Output } from "./generated/tierroute/v1/Hop";
import type { Reason__Output } from "./generated/tierroute/v1/Reason";
import type { RouteRequest } from "./generated/tierroute/v1/RouteRequest";
import type { RouteResponse__Output } from "./generated/tierroute/v1/RouteResponse";
import type { RoutingPolicy } from "./generated/tierroute/v1/RoutingPolicy";
import type { TierRouterClient } from "./generated/tierroute/v1/TierRouter";

export const SERVICE = "tierroute.v1.TierRouter";
export const DEFAULT_TARGET = "127.0.0.1:50051";
/** Route calls no model and answers in milliseconds. */
export const DEFAULT_DEADLINE_MS = 10_000;
/** Cascade waits for model calls, judges and escalations. */
export const DEFAULT_CASCADE_DEADLINE_MS = 120_000;
/** The proto files copied next to the package by `npm run gen`. */
export const DEFAULT_PROTO_DIR = join(__dirname, "..", "..", "proto");

/** Options for @grpc/proto-loader; they must match the generator's in scripts/gen.js. */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

export type Role = "system" | "user" | "assistant";
export type Strategy = "heuristic" | "classifier" | "self_routing";
export type Rule = "calibrated" | "published";
export type JudgeMode = "always" | "never" | "start_only";

/** A machine-readable reason code (`RISK_ABOVE_THRESHOLD`) and a short detail. */
export interface Reason {
  code: string;
  detail: string;
}

/** The shape signals of the routed text, as the heuristic sees them. */
export interface Features {
  estimatedTokens: number;
  hasCodeBlock: boolean;
  multiStep: boolean;
  queryType: string;
  /** How much the text looks like the router model's training prompts (0-1); null when the
   * server's model has no such signal (or the heuristic strategy decided). */
  familiarity: number | null;
}

/** Which tier should answer, and everything that explains the decision. */
export interface RouteResult {
  requestId: string;
  tier: string;
  model: string;
  tierIndex: number;
  strategy: string;
  rule: string | null;
  scores: Record<string, number>;
  confidence: number;
  thresholds: Record<string, number>;
  reasons: Reason[];
  modelVersion: string;
  decisionTimeUs: number;
  estimatedCostUsd: number;
  features: Features;
}

/** A Messages API content block, as the Anthropic SDK writes it (`{type: "image", ...}`). */
export type Block = Record<string, unknown> & { type: string };

/** A Messages API tool definition: name, description, input_schema (and cache_control). */
export interface ToolDefinition {
  name: string;
  description?: string;
  input_schema?: Record<string, unknown>;
  cache_control?: { type?: string; ttl?: string };
}

/** One model call inside a cascade: an answer or a judge verdict. */
export interface Hop {
  tier: string;
  model: string;
  role: string;
  outcome: string;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
  latencyMs: number;
  verdict: string | null;
  issues: string[];
  attempt: number;
  speculative: boolean;
  errorKind: string | null;
  stopReason: string | null;
  cacheCreationInputTokens: number;
  cacheReadInputTokens: number;
}

/** The answer, the tier that gave it, and every hop, cost and verdict on the way. */
export interface CascadeResult {
  requestId: string;
  answer: string;
  tier: string;
  model: string;
  hops: Hop[];
  totalCostUsd: number;
  totalLatencyMs: number;
  escalated: boolean;
  escalationReasons: Reason[];
  judgeStatus: string;
  degraded: boolean;
  degradedReasons: string[];
  route: RouteResult | null;
  /** The answer's content blocks (text, and tool_use for a tool call), as Messages API objects. */
  content: Block[];
  stopReason: string;
}

/**
 * One event of `cascadeStream`. The text of the `text` events after the last `retract`
 * joins to the `final` event's answer; `retract` comes only with `streamDrafts`.
 */
export type CascadeEvent =
  | {
      type: "hopStarted";
      index: number;
      tier: string;
      model: string;
      role: string;
      attempt: number;
      speculative: boolean;
    }
  | { type: "hopFinished"; index: number; hop: Hop }
  | {
      type: "verdict";
      answerTier: string;
      judgeTier: string;
      verdict: string;
      issues: string[];
    }
  | { type: "text"; text: string }
  | { type: "retract"; tier: string; reason: string }
  | { type: "final"; result: CascadeResult };

/** Per-call options of `route`; every one may be left out. */
export interface RouteOptions {
  /** (role, content) pairs; content is a string or a list of Messages API blocks. */
  messages?: Array<[Role, string | Block[]]>;
  strategy?: Strategy;
  rule?: Rule;
  qualityFloor?: number;
  maxCostUsd?: number;
  /** The Cascade value policy's operating point ("parity", "q95", "third_cost"). */
  operatingPoint?: string;
  tenantId?: string;
  sessionId?: string;
  metadata?: Record<string, string>;
  requestId?: string;
  /** Deadline for this call in ms; null = none; left out = the client's default. */
  timeoutMs?: number | null;
}

/** Per-call options of `cascade`: those of `route` plus the cascade's own. */
export interface CascadeOptions extends RouteOptions {
  startTier?: string;
  speculation?: boolean;
  judge?: JudgeMode;
  maxOutputTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  stopSequences?: string[];
  /** Sent as the Messages API's metadata.user_id. */
  userId?: string;
  tools?: ToolDefinition[];
  /** "auto", "any", "none", a tool's name, or the Messages API's tool_choice object. */
  toolChoice?: string | { type: string; name?: string; disable_parallel_tool_use?: boolean };
  /** cascadeStream only: stream drafts, with a retract event when one is withdrawn. */
  streamDrafts?: boolean;
}

/** Options of `feedback`. */
export interface FeedbackOptions {
  rating?: number;
  correct?: boolean;
  tenantId?: string;
  timeoutMs?: number | null;
}

/** A gRPC retryPolicy; gRPC caps maxAttempts at 5 whatever is asked. */
export interface RetryPolicy {
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  backoffMultiplier: number;
  retryableStatusCodes: string[];
}

export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: 4,
  initialBackoffMs: 100,
  maxBackoffMs: 2_000,
  backoffMultiplier: 2,
  retryableStatusCodes: ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
};

/** How the client connects; everything is optional. */
export interface ClientOptions {
  /** Default deadline of route and feedback calls in ms; null = none (not recommended). */
  deadlineMs?: number | null;
  /** Default deadline of cascade calls in ms. */
  cascadeDeadlineMs?: number | null;
  /** Connect with TLS (system roots unless `rootCerts`). */
  tls?: boolean;
  rootCerts?: Buffer;
  /** A PEM certificate chain and key for mutual TLS. */
  clientCert?: { chain: Buffer; key: Buffer };
  /** Sent as `authorization: Bearer <token>`; over plain text only with allowInsecureToken. */
  token?: string;
  allowInsecureToken?: boolean;
  /** Retries of Route (and Cascade with retryCascade); null turns them off. */
  retry?: RetryPolicy | null;
  retryCascade?: boolean;
  /** Extra channel options; they replace the client's own of the same name. */
  channelOptions?: grpc.ChannelOptions;
  /** Client interceptors, outermost first. */
  interceptors?: grpc.Interceptor[];
  /** Directory holding tierroute/v1/tierroute.proto. */
  protoDir?: string;
}

const TRANSIENT = new Set<grpc.status>([
  grpc.status.UNAVAILABLE,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.ABORTED,
]);

/** A tierroute call failed; `code` is its gRPC status code, `details` the server's message. */
export class TierRouteError extends Error {
  readonly code: grpc.status;
  readonly details: string;

  constructor(code: grpc.status, details: string, options?: { cause?: unknown }) {
    super(`${grpc.status[code] ?? code}: ${details}`, options);
    this.name = "TierRouteError";
    this.code = code;
    this.details = details;
  }

  /** Whether the failure may pass on a later attempt. */
  get transient(): boolean {
    return TRANSIENT.has(this.code);
  }

  static fromServiceError(error: grpc.ServiceError): TierRouteError {
    return new TierRouteError(error.code, error.details, { cause: error });
  }
}

function duration(ms: number): string {
  // Service config durations are protobuf JSON: decimal seconds with an "s".
  return `${(ms / 1000).toFixed(9).replace(/\.?0+$/, "")}s`;
}

/** The service config: round_robin, and retries for Route (and Cascade if asked). */
export function serviceConfig(
  retry: RetryPolicy | null,
  retryCascade = false,
  loadBalancing = "round_robin",
): Record<string, unknown> {
  const config: Record<string, unknown> = { loadBalancingConfig: [{ [loadBalancing]: {} }] };
  if (retry !== null) {
    const name = [{ service: SERVICE, method: "Route" }];
    if (retryCascade) name.push({ service: SERVICE, method: "Cascade" });
    config.methodConfig = [
      {
        name,
        retryPolicy: {
          maxAttempts: retry.maxAttempts,
          initialBackoff: duration(retry.initialBackoffMs),
          maxBackoff: duration(retry.maxBackoffMs),
          backoffMultiplier: retry.backoffMultiplier,
          retryableStatusCodes: retry.retryableStatusCodes,
        },
      },
    ];
    // Stops retries from multiplying load once most calls are failing.
    config.retryThrottling = { maxTokens: 10, tokenRatio: 0.1 };
  }
  return config;
}

function ipVersion(address: string): number {
  const colon = address.lastIndexOf(":");
  if (colon < 0 || !/^\d+$/.test(address.slice(colon + 1))) return 0;
  const host = address.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  return isIP(host);
}

/**
 * One gRPC target for an address or a list of `ip:port` addresses. A string passes through
 * (`dns:///name:50051` too); a list of IP literals becomes an `ipv4:`/`ipv6:` target. Host
 * names cannot be listed: use one DNS name that resolves to every replica instead.
 */
export function resolveTarget(target: string | string[]): string {
  if (typeof target === "string") {
    if (!target) throw new Error("target must not be empty");
    return target;
  }
  if (target.length === 0) throw new Error("target must name at least one address");
  if (target.length === 1) return target[0] as string;
  const versions = new Set(target.map(ipVersion));
  if (versions.size === 1 && versions.has(4)) return `ipv4:${target.join(",")}`;
  if (versions.size === 1 && versions.has(6)) return `ipv6:${target.join(",")}`;
  throw new Error(
    "a list of targets must be 'ip:port' literals of one IP version; for host names use " +
      "one DNS name that resolves to every replica, e.g. dns:///tierroute-headless:50051",
  );
}

function lookup<V>(table: Record<string, V>, name: string, what: string): V {
  const value = table[name];
  if (value === undefined) {
    throw new Error(`unknown ${what} '${name}'; expected one of ${Object.keys(table).join(", ")}`);
  }
  return value;
}

const STRATEGIES: Record<Strategy, RouteRequest["strategy"]> = {
  heuristic: "STRATEGY_HEURISTIC",
  classifier: "STRATEGY_CLASSIFIER",
  self_routing: "STRATEGY_SELF_ROUTING",
};
const RULES: Record<Rule, RoutingPolicy["rule"]> = {
  calibrated: "DECISION_RULE_CALIBRATED",
  published: "DECISION_RULE_PUBLISHED",
};
const ROLES: Record<Role, ChatMessage["role"]> = {
  system: "ROLE_SYSTEM",
  user: "ROLE_USER",
  assistant: "ROLE_ASSISTANT",
};
const JUDGE: Record<JudgeMode, CascadeRequest["judgeMode"]> = {
  always: "JUDGE_MODE_ALWAYS",
  never: "JUDGE_MODE_NEVER",
  start_only: "JUDGE_MODE_START_ONLY",
};

const TOOL_CHOICES: Record<string, NonNullable<ToolChoice["type"]>> = {
  auto: "TOOL_CHOICE_TYPE_AUTO",
  any: "TOOL_CHOICE_TYPE_ANY",
  tool: "TOOL_CHOICE_TYPE_TOOL",
  none: "TOOL_CHOICE_TYPE_NONE",
};

function cacheControl(value: unknown): { type: string; ttl: string } | undefined {
  if (value === undefined || value === null) return undefined;
  const control = value as { type?: string; ttl?: string };
  return { type: control.type ?? "", ttl: control.ttl ?? "" };
}

function mediaSource(value: unknown): MediaSource {
  const source = value as { type?: string; media_type?: string; data?: string; url?: string };
  if (source.type === "url") return { url: source.url ?? "" };
  if (source.type === "base64") {
    return { mediaType: source.media_type ?? "", data: Buffer.from(source.data ?? "", "base64") };
  }
  if (source.type === "text") {
    return { mediaType: source.media_type ?? "text/plain", data: Buffer.from(source.data ?? "") };
  }
  throw new Error(`unknown source type '${source.type}'; expected base64, url or text`);
}

/** One Messages API block as the contract's ContentBlock. */
export function blockToProto(block: Block): ContentBlock {
  const b = block as Record<string, unknown>;
  const out: ContentBlock = {};
  switch (block.type) {
    case "text":
      out.text = { text: String(b.text ?? "") };
      break;
    case "image":
      out.image = { source: mediaSource(b.source) };
      break;
    case "document": {
      const citations = b.citations as { enabled?: boolean } | undefined;
      out.document = {
        source: mediaSource(b.source),
        title: String(b.title ?? ""),
        context: String(b.context ?? ""),
        citations: Boolean(citations?.enabled),
      };
      break;
    }
    case "tool_use":
      out.toolUse = {
        id: String(b.id ?? ""),
        name: String(b.name ?? ""),
        inputJson: JSON.stringify(b.input ?? {}),
      };
      break;
    case "tool_result": {
      const content = typeof b.content === "string" ? [{ type: "text", text: b.content }] : b.content;
      out.toolResult = {
        toolUseId: String(b.tool_use_id ?? ""),
        content: ((content as Block[] | undefined) ?? []).map(blockToProto),
        isError: Boolean(b.is_error),
      };
      break;
    }
    default:
      throw new Error(
        `unknown block type '${block.type}'; expected text, image, document, tool_use or tool_result`,
      );
  }
  const control = cacheControl(b.cache_control);
  if (control) out.cacheControl = control;
  return out;
}

function blockFromProto(block: ContentBlock__Output): Block {
  if (block.block === "toolUse" && block.toolUse) {
    return {
      type: "tool_use",
      id: block.toolUse.id,
      name: block.toolUse.name,
      input: JSON.parse(block.toolUse.inputJson || "{}") as unknown,
    };
  }
  if (block.block === "text" && block.text) return { type: "text", text: block.text.text };
  return { type: String(block.block) };
}

function toolToProto(tool: ToolDefinition): Tool {
  const out: Tool = {
    name: tool.name,
    description: tool.description ?? "",
    inputSchemaJson: JSON.stringify(tool.input_schema ?? { type: "object" }),
  };
  const control = cacheControl(tool.cache_control);
  if (control) out.cacheControl = control;
  return out;
}

function toolChoiceToProto(choice: NonNullable<CascadeOptions["toolChoice"]>): ToolChoice {
  const spec =
    typeof choice === "string"
      ? choice in TOOL_CHOICES
        ? { type: choice }
        : { type: "tool", name: choice }
      : choice;
  return {
    type: lookup(TOOL_CHOICES, spec.type, "tool choice"),
    name: spec.name ?? "",
    disableParallelToolUse: Boolean(
      (spec as { disable_parallel_tool_use?: boolean }).disable_parallel_tool_use,
    ),
  };
}

function chatMessage([role, content]: [Role, string | Block[]]): ChatMessage {
  if (typeof content === "string") return { role: lookup(ROLES, role, "role"), content };
  return { role: lookup(ROLES, role, "role"), content: "", blocks: content.map(blockToProto) };
}

function routeFields(text: string | undefined, o: RouteOptions): RouteRequest {
  const request: RouteRequest = {
    query: text ?? "",
    messages: (o.messages ?? []).map(chatMessage),
    strategy: o.strategy ? lookup(STRATEGIES, o.strategy, "strategy") : "STRATEGY_UNSPECIFIED",
    tenantId: o.tenantId ?? "",
    sessionId: o.sessionId ?? "",
    metadata: o.metadata ?? {},
    requestId: o.requestId ?? "",
  };
  if (
    o.rule !== undefined ||
    o.qualityFloor !== undefined ||
    o.maxCostUsd !== undefined ||
    o.operatingPoint !== undefined
  ) {
    request.policy = {
      rule: o.rule ? lookup(RULES, o.rule, "rule") : "DECISION_RULE_UNSPECIFIED",
      qualityFloor: o.qualityFloor ?? 0,
      maxCostUsd: o.maxCostUsd ?? 0,
      operatingPoint: o.operatingPoint ?? "",
    };
  }
  return request;
}

function enumName(value: string | number, prefix: string, upper = false): string {
  // Proto3 enums are open: a value this client predates arrives as a number.
  if (typeof value === "number") return String(value);
  const name = value.startsWith(prefix) ? value.slice(prefix.length) : value;
  return upper ? name : name.toLowerCase();
}

function reason(r: Reason__Output): Reason {
  return { code: enumName(r.code, "REASON_CODE_", true), detail: r.detail };
}

function routeResult(r: RouteResponse__Output): RouteResult {
  return {
    requestId: r.requestId,
    tier: r.tier?.name ?? "",
    model: r.tier?.model ?? "",
    tierIndex: r.tier?.index ?? 0,
    strategy: enumName(r.strategy, "STRATEGY_"),
    rule: r.rule === "DECISION_RULE_UNSPECIFIED" ? null : enumName(r.rule, "DECISION_RULE_"),
    scores: Object.fromEntries(r.scores.map((s) => [s.tier, s.probability])),
    confidence: r.confidence,
    thresholds: { ...r.thresholds },
    reasons: r.reasons.map(reason),
    modelVersion: r.modelVersion,
    decisionTimeUs: Number(r.decisionTimeUs),
    estimatedCostUsd: r.estimatedCostUsd,
    features: {
      estimatedTokens: r.features?.estimatedTokens ?? 0,
      hasCodeBlock: r.features?.hasCodeBlock ?? false,
      multiStep: r.features?.multiStep ?? false,
      queryType: r.features?.queryType ?? "",
      familiarity:
        r.features?._familiarity === "familiarity" ? (r.features.familiarity ?? null) : null,
    },
  };
}

function hop(h: Hop__Output): Hop {
  return {
    tier: h.tier,
    model: h.model,
    role: enumName(h.role, "HOP_ROLE_"),
    outcome: enumName(h.outcome, "HOP_OUTCOME_"),
    inputTokens: Number(h.inputTokens),
    outputTokens: Number(h.outputTokens),
    costUsd: h.costUsd,
    latencyMs: h.latencyMs,
    verdict:
      h.verdict === "JUDGE_VERDICT_UNSPECIFIED" ? null : enumName(h.verdict, "JUDGE_VERDICT_"),
    issues: [...h.issues],
    attempt: h.attempt,
    speculative: h.speculative,
    errorKind: h.errorKind || null,
    stopReason: h.stopReason || null,
    cacheCreationInputTokens: Number(h.cacheCreationInputTokens),
    cacheReadInputTokens: Number(h.cacheReadInputTokens),
  };
}

function cascadeResult(r: CascadeResponse__Output): CascadeResult {
  return {
    requestId: r.requestId,
    answer: r.answer,
    tier: r.tier?.name ?? "",
    model: r.tier?.model ?? "",
    hops: r.hops.map(hop),
    totalCostUsd: r.totalCostUsd,
    totalLatencyMs: r.totalLatencyMs,
    escalated: r.escalated,
    escalationReasons: r.escalationReasons.map(reason),
    judgeStatus: enumName(r.judgeStatus, "JUDGE_STATUS_"),
    degraded: r.degraded,
    degradedReasons: [...r.degradedReasons],
    route: r.route ? routeResult(r.route) : null,
    content: r.content.map(blockFromProto),
    stopReason: r.stopReason,
  };
}

/** One streamed event, or null for a kind this client predates (skipped). */
function cascadeEvent(e: CascadeEvent__Output): CascadeEvent | null {
  switch (e.event) {
    case "text":
      return { type: "text", text: e.text ?? "" };
    case "hopStarted": {
      const s = e.hopStarted;
      if (!s) return null;
      return {
        type: "hopStarted",
        index: s.index,
        tier: s.tier,
        model: s.model,
        role: enumName(s.role, "HOP_ROLE_"),
        attempt: s.attempt,
        speculative: s.speculative,
      };
    }
    case "hopFinished":
      if (!e.hopFinished?.hop) return null;
      return { type: "hopFinished", index: e.hopFinished.index, hop: hop(e.hopFinished.hop) };
    case "verdict": {
      const v = e.verdict;
      if (!v) return null;
      return {
        type: "verdict",
        answerTier: v.answerTier,
        judgeTier: v.judgeTier,
        verdict: enumName(v.verdict, "JUDGE_VERDICT_"),
        issues: [...v.issues],
      };
    }
    case "retract":
      return { type: "retract", tier: e.retract?.tier ?? "", reason: e.retract?.reason ?? "" };
    case "response":
      return e.response ? { type: "final", result: cascadeResult(e.response) } : null;
    default:
      return null;
  }
}

function cascadeRequest(text: string | undefined, options: CascadeOptions): CascadeRequest {
  const request: CascadeRequest = {
    ...routeFields(text, options),
    startTier: options.startTier ?? "",
    maxOutputTokens: options.maxOutputTokens ?? 0,
    speculation:
      options.speculation === undefined
        ? "SPECULATION_MODE_UNSPECIFIED"
        : options.speculation
          ? "SPECULATION_MODE_ON"
          : "SPECULATION_MODE_OFF",
    judgeMode: options.judge ? lookup(JUDGE, options.judge, "judge mode") : "JUDGE_MODE_UNSPECIFIED",
    stopSequences: options.stopSequences ?? [],
    metadataUserId: options.userId ?? "",
    tools: (options.tools ?? []).map(toolToProto),
    streamDrafts: options.streamDrafts ?? false,
  };
  // Optional fields stay unset (the provider's default) unless given.
  if (options.temperature !== undefined) request.temperature = options.temperature;
  if (options.topP !== undefined) request.topP = options.topP;
  if (options.topK !== undefined) request.topK = options.topK;
  if (options.toolChoice !== undefined) request.toolChoice = toolChoiceToProto(options.toolChoice);
  return request;
}

type Unary<Req, Res> = (
  argument: Req,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: grpc.requestCallback<Res>,
) => grpc.ClientUnaryCall;

/** A client for one tierroute target (one or many replicas); call `close()` when done. */
export class TierRouteClient {
  readonly target: string;
  private readonly client: TierRouterClient;
  private readonly deadlineMs: number | null;
  private readonly cascadeDeadlineMs: number | null;
  private readonly token: string | null;

  constructor(target: string | string[] = DEFAULT_TARGET, options: ClientOptions = {}) {
    this.target = resolveTarget(target);
    this.deadlineMs = options.deadlineMs === undefined ? DEFAULT_DEADLINE_MS : options.deadlineMs;
    this.cascadeDeadlineMs =
      options.cascadeDeadlineMs === undefined
        ? DEFAULT_CASCADE_DEADLINE_MS
        : options.cascadeDeadlineMs;
    for (const value of [this.deadlineMs, this.cascadeDeadlineMs]) {
      if (value !== null && !(value > 0)) throw new Error("deadlines must be positive or null");
    }
    if ((options.rootCerts || options.clientCert) && !options.tls) {
      throw new Error("rootCerts and clientCert need tls: true");
    }
    let credentials: grpc.ChannelCredentials;
    this.token = null;
    if (options.tls) {
      credentials = grpc.credentials.createSsl(
        options.rootCerts ?? null,
        options.clientCert?.key ?? null,
        options.clientCert?.chain ?? null,
      );
      if (options.token) {
        // Call credentials: grpc-js refuses to combine them with an insecure channel.
        const token = options.token;
        const bearer = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
          const metadata = new grpc.Metadata();
          metadata.set("authorization", `Bearer ${token}`);
          callback(null, metadata);
        });
        credentials = grpc.credentials.combineChannelCredentials(credentials, bearer);
      }
    } else {
      credentials = grpc.credentials.createInsecure();
      if (options.token) {
        if (!options.allowInsecureToken) {
          throw new Error(
            "a bearer token over plain text can be read by anyone on the path; use " +
              "tls: true, or allowInsecureToken: true inside a trusted network only",
          );
        }
        this.token = options.token;
      }
    }
    const retry = options.retry === undefined ? DEFAULT_RETRY : options.retry;
    const channelOptions: grpc.ChannelOptions = {
      "grpc.service_config": JSON.stringify(serviceConfig(retry, options.retryCascade ?? false)),
      "grpc.enable_retries": 1,
      // The retry policy is this client's decision; ignore service configs published in DNS.
      "grpc.service_config_disable_resolution": 1,
      ...options.channelOptions,
    };
    if (options.interceptors) channelOptions.interceptors = options.interceptors;
    const definition = protoLoader.loadSync("tierroute/v1/tierroute.proto", {
      ...LOADER_OPTIONS,
      includeDirs: [options.protoDir ?? DEFAULT_PROTO_DIR],
    });
    const proto = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
    this.client = new proto.tierroute.v1.TierRouter(this.target, credentials, channelOptions);
  }

  private metadata(): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (this.token !== null) metadata.set("authorization", `Bearer ${this.token}`);
    return metadata;
  }

  private callOptions(timeoutMs: number | null | undefined, fallback: number | null) {
    const ms = timeoutMs === undefined ? fallback : timeoutMs;
    return ms === null ? {} : { deadline: new Date(Date.now() + ms) };
  }

  private call<Req, Res>(
    method: Unary<Req, Res>,
    request: Req,
    options: grpc.CallOptions,
  ): Promise<Res> {
    return new Promise((resolve, reject) => {
      method.call(this.client, request, this.metadata(), options, (error, response) => {
        if (error) reject(TierRouteError.fromServiceError(error));
        else if (response === undefined) {
          reject(new TierRouteError(grpc.status.INTERNAL, "empty response"));
        } else resolve(response);
      });
    });
  }

  /** Which tier should answer `text` (or `messages`); retried per the retry policy. */
  async route(text?: string, options: RouteOptions = {}): Promise<RouteResult> {
    const request = routeFields(text, options);
    const response = await this.call<RouteRequest, RouteResponse__Output>(
      this.client.Route,
      request,
      this.callOptions(options.timeoutMs, this.deadlineMs),
    );
    return routeResult(response);
  }

  /** Answer `text` through the judged cascade; not retried unless `retryCascade`. */
  async cascade(text?: string, options: CascadeOptions = {}): Promise<CascadeResult> {
    const response = await this.call<CascadeRequest, CascadeResponse__Output>(
      this.client.Cascade,
      cascadeRequest(text, options),
      this.callOptions(options.timeoutMs, this.cascadeDeadlineMs),
    );
    return cascadeResult(response);
  }

  /**
   * The cascade's events as they happen, the `final` result last; never retried. Leaving
   * the `for await` loop early (break, return, throw) cancels the call and every model call
   * behind it.
   */
  async *cascadeStream(
    text?: string,
    options: CascadeOptions = {},
  ): AsyncGenerator<CascadeEvent, void, undefined> {
    const call = this.client.CascadeStream(
      cascadeRequest(text, options),
      this.metadata(),
      this.callOptions(options.timeoutMs, this.cascadeDeadlineMs),
    );
    try {
      for await (const message of call as AsyncIterable<CascadeEvent__Output>) {
        const event = cascadeEvent(message);
        if (event !== null) yield event;
      }
    } catch (error) {
      const service = error as grpc.ServiceError;
      if (typeof service.code === "number") throw TierRouteError.fromServiceError(service);
      throw error;
    } finally {
      call.cancel();
    }
  }

  /** Record a 1-5 rating and/or a correctness flag; resolves to the request id recorded. */
  async feedback(requestId: string, options: FeedbackOptions = {}): Promise<string> {
    const request: FeedbackRequest = {
      requestId,
      rating: options.rating ?? 0,
      tenantId: options.tenantId ?? "",
    };
    // `correct` is optional in the contract: left unset (not false) when not given.
    if (options.correct !== undefined) request.correct = options.correct;
    const response = await this.call<FeedbackRequest, { requestId: string }>(
      this.client.Feedback,
      request,
      this.callOptions(options.timeoutMs, this.deadlineMs),
    );
    return response.requestId;
  }

  /** The health status (`SERVING`, `NOT_SERVING`, ...) of `service` ("" = the server). */
  checkHealth(service = "", timeoutMs = 5_000): Promise<string> {
    const check = healthService.Check;
    if (check === undefined) throw new Error("grpc-health-check has no Check method");
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest<object, { status?: string }>(
        check.path,
        check.requestSerialize,
        check.responseDeserialize as (bytes: Buffer) => { status?: string },
        { service },
        this.metadata(),
        { deadline: new Date(Date.now() + timeoutMs) },
        (error, response) => {
          if (error) reject(TierRouteError.fromServiceError(error));
          else resolve(response?.status ?? "UNKNOWN");
        },
      );
    });
  }

  /** Resolve once the channel is connected, or reject after `timeoutMs`. */
  waitForReady(timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client.waitForReady(new Date(Date.now() + timeoutMs), (error) =>
        error ? reject(error) : resolve(),
      );
    });
  }

  /** Close the channel; calls in flight are cancelled. */
  close(): void {
    this.client.close();
  }
}
