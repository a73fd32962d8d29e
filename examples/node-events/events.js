#!/usr/bin/env node
// Events from Node.js: CloudEvents built with the official `cloudevents` SDK, posted in HTTP
// structured mode to PlanGate's `POST /v1/events` (the OFREP port), and the metered result
// read back through the unmodified @openfeature/flagd-provider (RPC resolver).
//
//   node events.js [--events URL] [--flagd HOST:PORT] [--source S] [--token T] OPERATION...
//
//   send TYPE SUBJECT DATA_JSON [ID]   one event; without ID the SDK makes a fresh UUID.
//                                      Sending the same SOURCE and ID again is safe: the
//                                      sidecar answers DUPLICATE and counts nothing.
//   eval FEATURE ACCOUNT               the feature's number for the account (remaining units
//                                      of a metered feature) and its flag metadata
//
// Prints one JSON line per operation; exits 1 when an event was rejected or an evaluation
// failed.
"use strict";

const { CloudEvent, HTTP } = require("cloudevents");
const { OpenFeature } = require("@openfeature/server-sdk");
const { FlagdProvider } = require("@openfeature/flagd-provider");

function parse(argv) {
  const options = {
    events: process.env.PLANGATE_EVENTS_URL || "http://127.0.0.1:8016/v1/events",
    flagd: "127.0.0.1:8013",
    source: "node-events-example",
    token: process.env.PLANGATE_TOKEN || "",
  };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].startsWith("--") ? argv[i].slice(2) : null;
    if (name !== null && name in options) {
      options[name] = argv[++i];
    } else {
      rest.push(argv[i]);
    }
  }
  return { options, operations: rest };
}

async function send(options, type, subject, data, id) {
  const event = new CloudEvent({
    source: options.source,
    type,
    subject,
    data: JSON.parse(data),
    ...(id ? { id } : {}),
  });
  const message = HTTP.structured(event); // Content-Type: application/cloudevents+json
  const headers = { ...message.headers };
  if (options.token) headers.Authorization = `Bearer ${options.token}`;
  const response = await fetch(options.events, { method: "POST", headers, body: message.body });
  const text = await response.text();
  if (response.status !== 200) {
    return { op: "send", type, subject, id: event.id, ok: false, http: response.status, error: text };
  }
  const [result] = JSON.parse(text).results;
  return { op: "send", type, subject, id: event.id, ok: result.status !== "REJECTED", ...result };
}

async function evaluate(client, feature, account) {
  const details = await client.getNumberDetails(feature, -1, { targetingKey: account });
  return {
    op: "eval",
    feature,
    account,
    ok: !details.errorCode,
    value: details.value,
    reason: details.reason,
    error: details.errorCode ?? null,
    metadata: details.flagMetadata,
  };
}

async function main() {
  const { options, operations } = parse(process.argv.slice(2));
  const [host, port] = options.flagd.split(":");
  let client = null;
  let failed = false;
  for (let i = 0; i < operations.length; ) {
    const op = operations[i];
    let line;
    if (op === "send") {
      const [type, subject, data] = operations.slice(i + 1, i + 4);
      const id = operations[i + 4] && !["send", "eval"].includes(operations[i + 4]) ? operations[i + 4] : "";
      line = await send(options, type, subject, data, id);
      i += id ? 5 : 4;
    } else if (op === "eval") {
      if (client === null) {
        await OpenFeature.setProviderAndWait(
          new FlagdProvider({ host, port: Number(port), resolverType: "rpc", cache: "disabled" }),
        );
        client = OpenFeature.getClient();
      }
      line = await evaluate(client, operations[i + 1], operations[i + 2]);
      i += 3;
    } else {
      line = { op, ok: false, error: `unknown operation ${op}; use send or eval` };
      i = operations.length;
    }
    failed = failed || !line.ok;
    process.stdout.write(JSON.stringify(line) + "\n");
  }
  await OpenFeature.close();
  process.exit(failed ? 1 : 0);
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(2);
});
