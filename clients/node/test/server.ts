/**
 * Starts a real tierroute server for the tests: `python -m tierroute serve --port 0
 * --http-port 0` from the repository's virtualenv, with synthetic replay answers that arrive
 * at once. The bound ports are read from the server's "serving HTTP on" and "serving on"
 * lines, then the gRPC health check must say SERVING.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

import { TierRouteClient } from "../src/client";

const REPO = join(__dirname, "..", "..", "..", "..");
const PYTHON = process.env.TIERROUTE_PYTHON ?? join(REPO, ".venv", "bin", "python");
// Bounds only a broken start-up (model load and warm-up take about a second).
const START_TIMEOUT_MS = 60_000;

export interface RunningServer {
  address: string;
  port: number;
  /** The base URL of the Anthropic Messages API endpoint, for an SDK's baseURL. */
  httpUrl: string;
  stop(): Promise<void>;
}

interface BoundPorts {
  grpc: number;
  http: number;
}

function serverEnv(): NodeJS.ProcessEnv {
  // Nothing from the caller's environment may change what the server does: above all no
  // ANTHROPIC_API_KEY, which would send test queries to the real API.
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(TIERROUTE_|ANTHROPIC_|OTEL_)/.test(key)) env[key] = value;
  }
  return {
    ...env,
    TIERROUTE_DATA: "/nonexistent/tierroute-test-data",
    TIERROUTE_REPLAY_TIME_SCALE: "0",
    TIERROUTE_QUERYLOG_ENABLED: "false",
  };
}

function boundPorts(child: ChildProcess, stderr: () => string): Promise<BoundPorts> {
  let http = 0;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`server did not start in ${START_TIMEOUT_MS} ms:\n${stderr()}`));
    }, START_TIMEOUT_MS);
    const lines = createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      // The HTTP line comes first; "serving on" says both transports are up.
      const httpMatch = /tierroute serving HTTP on \S+:(\d+)/.exec(line);
      if (httpMatch) http = Number(httpMatch[1]);
      const match = /tierroute serving on \S+:(\d+)/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve({ grpc: Number(match[1]), http });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before serving:\n${stderr()}`));
    });
  });
}

export async function startServer(): Promise<RunningServer> {
  const cwd = mkdtempSync(join(tmpdir(), "tierroute-node-test-"));
  const child = spawn(
    PYTHON,
    [
      "-m",
      "tierroute",
      "--log-level",
      "WARNING",
      "serve",
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--http-port",
      "0",
    ],
    { cwd, env: serverEnv(), stdio: ["ignore", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      await exited;
    }
    rmSync(cwd, { recursive: true, force: true });
  };
  try {
    const ports = await boundPorts(child, () => stderr);
    const port = ports.grpc;
    const address = `127.0.0.1:${port}`;
    const probe = new TierRouteClient(address);
    try {
      const status = await probe.checkHealth("", START_TIMEOUT_MS);
      if (status !== "SERVING") throw new Error(`health check says ${status}`);
    } finally {
      probe.close();
    }
    return { address, port, httpUrl: `http://127.0.0.1:${ports.http}`, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
