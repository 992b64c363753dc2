/**
 * The official `openai` SDK against tierroute's OpenAI-compatible door, changed only in its
 * baseURL: create, stream (with usage), tools, errors and models, on a real server the tests
 * start; and the Anthropic SDK's countTokens on the Messages door of the same server.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";

import { startServer, type RunningServer } from "./server";

const TIERS = ["cheap", "mid", "expensive"];
const TIER_MODELS = ["claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-8"];
const QUESTION = "Tell me about otters.";
const LOOKUP = {
  type: "function" as const,
  function: {
    name: "search_docs",
    description: "Search the documentation.",
    parameters: {
      type: "object",
      properties: { query: { type: "string" } },
      required: ["query"],
    },
  },
};

describe("the OpenAI SDK against the chat-completions door", () => {
  let server: RunningServer;
  let client: OpenAI;

  before(async () => {
    server = await startServer();
    // No retries: each error is seen as the server sent it.
    client = new OpenAI({ baseURL: `${server.httpUrl}/v1`, apiKey: "unused", maxRetries: 0 });
  });

  after(async () => {
    await server?.stop();
  });

  test("create answers, names the model that answered and counts its tokens", async () => {
    const { data: completion, response } = await client.chat.completions
      .create({ model: "tierroute", messages: [{ role: "user", content: QUESTION }] })
      .withResponse();
    assert.equal(completion.object, "chat.completion");
    const choice = completion.choices[0];
    assert.ok(choice?.message.content && choice.message.content.length > 0);
    assert.equal(choice.finish_reason, "stop");
    const tier = response.headers.get("x-tierroute-tier") ?? "";
    assert.ok(TIERS.includes(tier), tier);
    assert.equal(completion.model, TIER_MODELS[TIERS.indexOf(tier)]);
    assert.ok(Number(response.headers.get("x-tierroute-cost-usd")) > 0);
    const usage = completion.usage;
    assert.ok(usage && usage.completion_tokens > 0);
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  });

  test("a stream's pieces join to the answer and end with the usage chunk", async () => {
    const stream = await client.chat.completions.create({
      model: "claude-haiku-4-5",
      messages: [{ role: "user", content: QUESTION }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const pieces: string[] = [];
    const finishes: (string | null)[] = [];
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      assert.equal(chunk.model, "claude-haiku-4-5");
      const choice = chunk.choices[0];
      if (choice?.delta.content) pieces.push(choice.delta.content);
      if (choice) finishes.push(choice.finish_reason);
      if (chunk.usage) usage = chunk.usage;
    }
    assert.ok(pieces.length > 1);
    assert.ok(pieces.join("").length > 0);
    assert.equal(finishes.at(-1), "stop");
    assert.ok(usage && usage.completion_tokens > 0);
  });

  test("tierroute@parity runs the Cascade at the shipped default operating point", async () => {
    const completion = await client.chat.completions.create({
      model: "tierroute@parity",
      messages: [{ role: "user", content: QUESTION }],
    });
    assert.ok(TIER_MODELS.includes(completion.model), completion.model);
    assert.ok(completion.choices[0]?.message.content);
  });

  test("a tool call comes back as a function call with JSON arguments", async () => {
    const completion = await client.chat.completions.create({
      model: "tierroute",
      tools: [LOOKUP],
      messages: [{ role: "user", content: QUESTION }],
    });
    const choice = completion.choices[0];
    assert.equal(choice?.finish_reason, "tool_calls");
    const call = choice?.message.tool_calls?.[0];
    assert.ok(call && call.type === "function");
    assert.equal(call.function.name, "search_docs");
    assert.deepEqual(JSON.parse(call.function.arguments), { query: QUESTION });
  });

  test("a streamed tool call arrives as a tool_calls delta", async () => {
    const stream = await client.chat.completions.create({
      model: "tierroute",
      tools: [LOOKUP],
      messages: [{ role: "user", content: QUESTION }],
      stream: true,
    });
    const names: string[] = [];
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      for (const call of chunk.choices[0]?.delta.tool_calls ?? []) {
        if (call.function?.name) names.push(call.function.name);
      }
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.deepEqual(names, ["search_docs"]);
    assert.equal(finish, "tool_calls");
  });

  test("an unknown model is the SDK's NotFoundError with OpenAI's error JSON", async () => {
    await assert.rejects(
      client.chat.completions.create({
        model: "gpt-4o",
        messages: [{ role: "user", content: QUESTION }],
      }),
      (error: unknown) => {
        assert.ok(error instanceof OpenAI.NotFoundError);
        assert.equal(error.status, 404);
        assert.equal(error.code, "model_not_found");
        assert.equal(error.param, "model");
        return true;
      },
    );
  });

  test("a field tierroute does not serve is a BadRequestError naming it", async () => {
    await assert.rejects(
      client.chat.completions.create({
        model: "tierroute",
        n: 2,
        messages: [{ role: "user", content: QUESTION }],
      }),
      (error: unknown) => {
        assert.ok(error instanceof OpenAI.BadRequestError);
        assert.equal(error.param, "n");
        return true;
      },
    );
  });

  test("models lists the Cascade and every tier in OpenAI's shape", async () => {
    const ids: string[] = [];
    for await (const model of client.models.list()) {
      assert.equal(model.object, "model");
      ids.push(model.id);
    }
    assert.deepEqual(
      ids.filter((id) => !id.startsWith("tierroute@")),
      ["tierroute", ...TIER_MODELS],
    );
  });

  test("the Anthropic SDK's countTokens counts on the Messages door", async () => {
    const anthropic = new Anthropic({ baseURL: server.httpUrl, apiKey: "unused", maxRetries: 0 });
    const { data: counted, response } = await anthropic.messages
      .countTokens({ model: "tierroute", messages: [{ role: "user", content: QUESTION }] })
      .withResponse();
    assert.ok(counted.input_tokens > 0);
    assert.ok(TIERS.includes(response.headers.get("x-tierroute-tier") ?? ""));
  });
});
