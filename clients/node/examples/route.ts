/**
 * Route one query and answer another through the cascade.
 *
 *   make run &                      # a server on 127.0.0.1:50051
 *   cd clients/node && npm run example -- "What is the capital of France?"
 *
 * TIERROUTE_TARGET may name another target, or several `ip:port` separated by commas.
 */
import { TierRouteClient, TierRouteError } from "../src/client";

async function main(): Promise<number> {
  const query = process.argv[2] ?? "What is the capital of France?";
  const targets = (process.env.TIERROUTE_TARGET ?? "127.0.0.1:50051").split(",");
  const client = new TierRouteClient(targets.length > 1 ? targets : targets[0]);
  try {
    const decision = await client.route(query);
    console.log(`tier      ${decision.tier} (${decision.model})`);
    console.log(`strategy  ${decision.strategy}${decision.rule ? `, rule ${decision.rule}` : ""}`);
    for (const [tier, p] of Object.entries(decision.scores)) {
      console.log(`score     ${tier}=${p.toFixed(3)}`);
    }
    for (const r of decision.reasons) console.log(`reason    ${r.code}: ${r.detail}`);

    const answer = await client.cascade(query, { judge: "always" });
    console.log(`\n${answer.answer}\n`);
    console.log(`answered by ${answer.tier} (${answer.model}); judge ${answer.judgeStatus}`);
    for (const h of answer.hops) {
      const cost = h.costUsd.toFixed(6);
      console.log(`  ${h.role.padEnd(6)} ${h.tier.padEnd(10)} ${h.outcome} $${cost}`);
    }
    return 0;
  } catch (error) {
    if (error instanceof TierRouteError) {
      console.error(`error: ${error.message}`);
      return 1;
    }
    throw error;
  } finally {
    client.close();
  }
}

main().then((code) => {
  process.exitCode = code;
});
