/** The TypeScript client against a real tierroute server that the tests start themselves. */
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";

import * as grpc from "@grpc/grpc-js";

import {
  DEFAULT_DEADLINE_MS,
  DEFAULT_RETRY,
  TierRouteClient,
  TierRouteError,
  resolveTarget,
  serviceConfig,
} from "../src/client";
import { startServer, type RunningServer } from "./server";

/** A loopback address nothing listens on: bound once, then closed. */
async function deadAddress(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") throw new Error("no port");
  return `127.0.0.1:${address.port}`;
}

describe("channel configuration", () => {
  test("a list of IPv4 addresses becomes one ipv4: target", () => {
    assert.equal(
      resolveTarget(["127.0.0.1:5001", "127.0.0.1:5002"]),
      "ipv4:127.0.0.1:5001,127.0.0.1:5002",
    );
  });

  test("host names cannot be listed", () => {
    assert.throws(() => resolveTarget(["svc-a:1", "svc-b:1"]), /DNS name/);
  });

  test("the service config retries Route only, on UNAVAILABLE and RESOURCE_EXHAUSTED", () => {
    const config = serviceConfig(DEFAULT_RETRY) as {
      methodConfig: Array<{
        name: Array<{ method: string }>;
        retryPolicy: Record<string, unknown>;
      }>;
      loadBalancingConfig: unknown;
    };
    const [method] = config.methodConfig;
    assert.deepEqual(method?.name.map((n) => n.method), ["Route"]);
    assert.deepEqual(method?.retryPolicy.retryableStatusCodes, [
      "UNAVAILABLE",
      "RESOURCE_EXHAUSTED",
    ]);
    assert.equal(method?.retryPolicy.initialBackoff, "0.1s");
    assert.deepEqual(config.loadBalancingConfig, [{ round_robin: {} }]);
  });

  test("a token over plain text needs explicit consent", () => {
    assert.throws(() => new TierRouteClient("127.0.0.1:1", { token: "t" }), /tls: true/);
  });
});

describe("against a running server", () => {
  let server: RunningServer;
  let client: TierRouteClient;

  before(async () => {
    server = await startServer();
    client = new TierRouteClient(server.address);
  });

  after(async () => {
    client?.close();
    await server?.stop();
  });

  test("route with the heuristic sends a simple question to the cheap tier", async () => {
    const r = await client.route("What is the capital of France?", { strategy: "heuristic" });
    assert.equal(r.tier, "cheap");
    assert.equal(r.strategy, "heuristic");
    assert.deepEqual(r.reasons.map((x) => x.code), ["SIMPLE_QUERY"]);
    assert.equal(r.features.queryType, "factual");
    // The heuristic computes no familiarity: null, not 0.
    assert.equal(r.features.familiarity, null);
    assert.ok(r.requestId);
  });

  test("route with the bundled classifier reports scores for every tier", async () => {
    const r = await client.route("Prove that sqrt(2) is irrational.", { requestId: "node-1" });
    assert.equal(r.strategy, "classifier");
    assert.equal(r.requestId, "node-1");
    assert.deepEqual(Object.keys(r.scores), ["cheap", "mid", "expensive"]);
    const total = Object.values(r.scores).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(total - 1) < 1e-6, `scores sum to ${total}`);
    assert.ok(r.modelVersion);
    assert.ok(r.rule === "calibrated" || r.rule === "published");
  });

  test("cascade answers and reports every hop", async () => {
    const r = await client.cascade("Tell me about otters.", {
      judge: "always",
      startTier: "cheap",
      speculation: false,
    });
    assert.ok(r.answer.length > 0);
    assert.equal(r.hops[0]?.role, "answer");
    assert.equal(r.hops[0]?.tier, "cheap");
    assert.ok(r.hops.some((h) => h.role === "judge" && h.verdict !== null));
    const cost = r.hops.reduce((sum, h) => sum + h.costUsd, 0);
    assert.ok(Math.abs(cost - r.totalCostUsd) < 1e-12);
    assert.ok(["passed", "failed", "not_required", "unavailable"].includes(r.judgeStatus));
  });

  test("cascadeStream yields events whose text joins to the final answer", async () => {
    const events = [];
    for await (const event of client.cascadeStream("Tell me about otters.", { judge: "never" })) {
      events.push(event);
    }
    assert.equal(events[0]?.type, "hopStarted");
    const last = events[events.length - 1];
    assert.ok(last?.type === "final");
    const text = events.map((e) => (e.type === "text" ? e.text : "")).join("");
    assert.ok(text.length > 0);
    assert.equal(text, last.result.answer);
    assert.ok(!events.some((e) => e.type === "retract"));
  });

  test("leaving cascadeStream early ends the iteration without an error", async () => {
    let seen = 0;
    for await (const event of client.cascadeStream("Tell me about otters.", { judge: "never" })) {
      seen += 1;
      if (event.type === "hopStarted") break;
    }
    assert.equal(seen, 1);
    const r = await client.cascade("Tell me about otters.", { judge: "never" });
    assert.ok(r.answer.length > 0);
  });

  test("a rejected stream fails with TierRouteError carrying INVALID_ARGUMENT", async () => {
    const drain = async (): Promise<void> => {
      for await (const event of client.cascadeStream("q", { temperature: 5 })) void event;
    };
    await assert.rejects(drain(), (error: unknown) => {
      assert.ok(error instanceof TierRouteError);
      assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
      assert.match(error.details, /temperature/);
      return true;
    });
  });

  test("tools round-trip: the call comes back as blocks and its result gets the answer", async () => {
    const tool = {
      name: "search",
      description: "Search the web.",
      input_schema: {
        type: "object",
        properties: { q: { type: "string" } },
        required: ["q"],
      },
    };
    const question = "Which otters use tools?";
    const first = await client.cascade(question, { tools: [tool], sessionId: "node-loop" });
    assert.equal(first.judgeStatus, "tool_use");
    assert.equal(first.stopReason, "tool_use");
    const call = first.content.find((b) => b.type === "tool_use");
    assert.ok(call);
    assert.deepEqual(call.input, { q: question });
    const second = await client.cascade(undefined, {
      tools: [tool],
      sessionId: "node-loop",
      messages: [
        ["user", question],
        ["assistant", first.content],
        ["user", [{ type: "tool_result", tool_use_id: String(call.id), content: "sea otters" }]],
      ],
    });
    assert.equal(second.stopReason, "end_turn");
    // The turn that answers the tool call starts on the tier that made it (the agent loop);
    // a check of its final text may still move the answer up.
    assert.equal(second.route?.tier, first.tier);
    assert.ok(second.answer.length > 0);
  });

  test("a rejected request fails with TierRouteError carrying INVALID_ARGUMENT", async () => {
    await assert.rejects(client.route("   "), (error: unknown) => {
      assert.ok(error instanceof TierRouteError);
      assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(error.transient, false);
      return true;
    });
  });

  test("every call carries the default deadline", async () => {
    const deadlines: Array<grpc.Deadline | undefined> = [];
    const recorder: grpc.Interceptor = (options, next) => {
      deadlines.push(options.deadline);
      return new grpc.InterceptingCall(next(options));
    };
    const recorded = new TierRouteClient(server.address, { interceptors: [recorder] });
    try {
      const before = Date.now();
      await recorded.route("hello");
      const deadline = deadlines[0];
      assert.ok(deadline instanceof Date);
      assert.ok(deadline.getTime() >= before + DEFAULT_DEADLINE_MS);
    } finally {
      recorded.close();
    }
  });

  test("round_robin over a dead and a live address answers every call", async () => {
    const balanced = new TierRouteClient([await deadAddress(), server.address]);
    try {
      for (let i = 0; i < 20; i += 1) {
        const r = await balanced.route("hello", { strategy: "heuristic" });
        assert.equal(r.tier, "cheap");
      }
    } finally {
      balanced.close();
    }
  });
});
