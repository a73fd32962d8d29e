#!/usr/bin/env node
// The unmodified @openfeature/flagd-provider (RPC resolver) with @openfeature/server-sdk,
// pointed at a PlanGate sidecar. Prints one JSON line per provider event, and answers
// "eval <flag> <account>" lines on stdin with the boolean evaluation details.
"use strict";

const readline = require("node:readline");
const { OpenFeature, ProviderEvents } = require("@openfeature/server-sdk");
const { FlagdProvider } = require("@openfeature/flagd-provider");

const [host, port] = process.argv.slice(2);
const started = Date.now();

function print(line) {
  process.stdout.write(JSON.stringify({ ...line, t: (Date.now() - started) / 1000 }) + "\n");
}

const provider = new FlagdProvider({
  host,
  port: Number(port),
  resolverType: "rpc",
  cache: "disabled",
  retryBackoffMs: 100,
  retryBackoffMaxMs: 300, // reconnect quickly after the sidecar comes back
  retryGracePeriod: 2,
});

for (const [name, event] of Object.entries({
  READY: ProviderEvents.Ready,
  STALE: ProviderEvents.Stale,
  ERROR: ProviderEvents.Error,
  CONFIGURATION_CHANGED: ProviderEvents.ConfigurationChanged,
})) {
  OpenFeature.addHandler(event, (details) => print({ event: name, flags: details?.flagsChanged ?? [] }));
}

OpenFeature.setProvider(provider);
const client = OpenFeature.getClient();

readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  const [command, flag, account] = line.trim().split(/\s+/);
  if (command === "eval") {
    const details = await client.getBooleanDetails(flag, false, { targetingKey: account });
    print({ eval: flag, value: details.value, reason: details.reason, error: details.errorCode ?? null });
  } else if (command === "quit") {
    await OpenFeature.close();
    process.exit(0);
  }
});
