// Generates what the client needs from the contract in ../../protos (never edited by hand):
// a copy of the .proto files that the client loads at run time, and TypeScript types for
// every message and the service, written by @grpc/proto-loader's own generator.
"use strict";
const { cpSync, rmSync } = require("node:fs");
const { join } = require("node:path");
const { execFileSync } = require("node:child_process");

const root = join(__dirname, "..");
const contract = join(root, "..", "..", "protos");
const proto = join(root, "proto");
const generated = join(root, "src", "generated");

rmSync(proto, { recursive: true, force: true });
rmSync(generated, { recursive: true, force: true });
cpSync(join(contract, "tierroute"), join(proto, "tierroute"), { recursive: true });

// These options must match the loader options in src/client.ts (LOADER_OPTIONS).
execFileSync(
  process.execPath,
  [
    require.resolve("@grpc/proto-loader/build/bin/proto-loader-gen-types.js"),
    "--grpcLib=@grpc/grpc-js",
    "--longs=Number",
    "--enums=String",
    "--defaults",
    "--oneofs",
    "--includeComments",
    `--includeDirs=${proto}`,
    `--outDir=${generated}`,
    "tierroute/v1/tierroute.proto",
  ],
  { stdio: "inherit" },
);
