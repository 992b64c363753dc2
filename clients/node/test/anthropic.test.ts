/**
 * The official `@anthropic-ai/sdk` against tierroute's Messages API endpoint, changed only in
 * its baseURL: create, stream, tools and errors, on a real server the tests start.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import Anthropic from "@anthropic-ai/sdk";

import { startServer, type RunningServer } from "./server";

const TIER_MODELS = ["claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"];
const QUESTION = "Tell me about otters.";
const LOOKUP = {
  name: "search_docs",
  description: "Search the documentation.",
  input_schema: {
    type: "object" as const,
    properties: { query: { type: "string" } },
    required: ["query"],
  },
};

describe("the Anthropic SDK against the HTTP endpoint", () => {
  let server: RunningServer;
  let client: Anthropic;

  before(async () => {
    server = await startServer();
    // No retries: each error is seen as the server sent it.
    client = new Anthropic({ baseURL: server.httpUrl, apiKey: "unused", maxRetries: 0 });
  });

  after(async () => {
    await server?.stop();
  });

  test("create answers and names the model that answered", async () => {
    const { data: message, response } = await client.messages
      .create({
        model: "tierroute",
        max_tokens: 256,
        messages: [{ role: "user", content: QUESTION }],
      })
      .withResponse();
    assert.ok(TIER_MODELS.includes(message.model), message.model);
    assert.equal(message.role, "assistant");
    const block = message.content[0];
    assert.ok(block?.type === "text" && block.text.length > 0);
    assert.equal(message.stop_reason, "end_turn");
    const tier = response.headers.get("x-tierroute-tier");
    assert.ok(tier === "cheap" || tier === "mid" || tier === "expensive", String(tier));
    assert.equal(message.model, TIER_MODELS[["cheap", "mid", "expensive"].indexOf(tier)]);
    assert.ok(Number(response.headers.get("x-tierroute-cost-usd")) > 0);
    assert.ok(response.headers.get("x-tierroute-request-id"));
  });

  test("a stream's text joins to its final message", async () => {
    const stream = client.messages.stream({
      model: "claude-haiku-4-5",
      max_tokens: 256,
      messages: [{ role: "user", content: QUESTION }],
    });
    const pieces: string[] = [];
    stream.on("text", (piece) => pieces.push(piece));
    const final = await stream.finalMessage();
    assert.equal(final.model, "claude-haiku-4-5");
    const block = final.content[0];
    assert.ok(block?.type === "text");
    assert.ok(pieces.length > 1);
    assert.equal(pieces.join(""), block.text);
    assert.ok(final.usage.output_tokens > 0);
  });

  test("a tool call comes back as a tool_use block with its input", async () => {
    const message = await client.messages.create({
      model: "tierroute",
      max_tokens: 256,
      tools: [LOOKUP],
      messages: [{ role: "user", content: QUESTION }],
    });
    assert.equal(message.stop_reason, "tool_use");
    const call = message.content.find((b) => b.type === "tool_use");
    assert.ok(call?.type === "tool_use");
    assert.equal(call.name, "search_docs");
    assert.deepEqual(call.input, { query: QUESTION });
  });

  test("an unknown model is the SDK's NotFoundError with Anthropic's error JSON", async () => {
    await assert.rejects(
      client.messages.create({
        model: "gpt-4o",
        max_tokens: 256,
        messages: [{ role: "user", content: QUESTION }],
      }),
      (error: unknown) => {
        assert.ok(error instanceof Anthropic.NotFoundError);
        assert.equal(error.status, 404);
        const body = error.error as { type: string; error: { type: string } };
        assert.equal(body.error.type, "not_found_error");
        return true;
      },
    );
  });

  test("a bad request is the SDK's BadRequestError", async () => {
    await assert.rejects(
      client.messages.create({
        model: "tierroute",
        max_tokens: 256,
        messages: [{ role: "assistant", content: "no user turn" }],
      }),
      Anthropic.BadRequestError,
    );
  });

  test("models lists the Cascade, its operating points and every tier", async () => {
    const ids: string[] = [];
    for await (const model of client.models.list()) ids.push(model.id);
    const points = ids.filter((id) => id.startsWith("tierroute@"));
    assert.deepEqual(
      ids.filter((id) => !points.includes(id)),
      ["tierroute", ...TIER_MODELS],
    );
    // The shipped bundle's default operating point is one a caller can name.
    assert.ok(points.includes("tierroute@parity"), `no tierroute@parity in ${ids}`);
  });
});
