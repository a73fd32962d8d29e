#!/usr/bin/env node
// A Node.js client of PlanGate's native gRPC API (proto/plangate/v1/plangate.proto).
//
// It loads the .proto at run time with @grpc/proto-loader (no code generation step), runs the
// operations given on the command line in order, and prints one JSON line per operation, so
// its output is easy to read and to check from a script.
//
//   node client.js --target 127.0.0.1:8013 --account acct_acme \
//       evaluate sso  evaluate api-calls  report api-calls 5  evaluate api-calls  all
//
// Operations:
//   evaluate FEATURE        Evaluation.Evaluate: the feature for the account, every type that fits
//   all                     Evaluation.EvaluateAll: every feature's natural value
//   report FEATURE AMOUNT   Usage.Report: record usage (an idempotency key makes retries safe)
//
// Options:
//   --target HOST:PORT      the sidecar (default 127.0.0.1:8013, or PLANGATE_TARGET)
//   --account ID            the account (the OpenFeature targeting key)
//   --requested N           context attribute `requested` for evaluate (metered checks)
//   --token TOKEN           bearer token for Usage calls when the sidecar has --token-file
//                           (default PLANGATE_TOKEN)
//   --proto PATH            plangate.proto (default: the repository's copy)
//
// Exit status: 0 when every operation succeeded, 1 when one failed (its line has "error"),
// 2 on a usage error.
"use strict";

const crypto = require("node:crypto");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const DEADLINE_MS = 5000;

function usage(message) {
  process.stderr.write(`client.js: ${message}\n`);
  process.stderr.write(
    "usage: node client.js [--target HOST:PORT] --account ID [--requested N] [--token T] " +
      "(evaluate FEATURE | all | report FEATURE AMOUNT)...\n",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    target: process.env.PLANGATE_TARGET || "127.0.0.1:8013",
    account: "",
    requested: undefined,
    token: process.env.PLANGATE_TOKEN || "",
    proto: path.resolve(__dirname, "..", "..", "proto", "plangate", "v1", "plangate.proto"),
  };
  const ops = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      return argv[++i];
    };
    if (arg === "--target") opts.target = next();
    else if (arg === "--account") opts.account = next();
    else if (arg === "--requested") opts.requested = Number(next());
    else if (arg === "--token") opts.token = next();
    else if (arg === "--proto") opts.proto = next();
    else if (arg === "evaluate") ops.push({ op: "evaluate", feature: next() });
    else if (arg === "all") ops.push({ op: "all" });
    else if (arg === "report") {
      const feature = next();
      const amount = Number(next());
      if (!Number.isFinite(amount)) usage(`report ${feature}: AMOUNT must be a number`);
      ops.push({ op: "report", feature, amount });
    } else usage(`unknown argument ${JSON.stringify(arg)}`);
  }
  if (!opts.account) usage("--account is required");
  if (ops.length === 0) usage("give at least one operation");
  if (opts.requested !== undefined && !Number.isFinite(opts.requested)) usage("--requested must be a number");
  return { opts, ops };
}

// -- google.protobuf.Struct / Value / Timestamp <-> plain JavaScript ---------------------------

function fromValue(value) {
  if (value == null) return null;
  switch (value.kind) {
    case "nullValue":
      return null;
    case "numberValue":
      return value.numberValue;
    case "stringValue":
      return value.stringValue;
    case "boolValue":
      return value.boolValue;
    case "structValue":
      return fromStruct(value.structValue);
    case "listValue":
      return (value.listValue.values || []).map(fromValue);
    default:
      return null;
  }
}

function fromStruct(struct) {
  const out = {};
  for (const [key, value] of Object.entries((struct && struct.fields) || {})) out[key] = fromValue(value);
  return out;
}

function toValue(js) {
  if (js === null || js === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof js === "number") return { numberValue: js };
  if (typeof js === "string") return { stringValue: js };
  if (typeof js === "boolean") return { boolValue: js };
  if (Array.isArray(js)) return { listValue: { values: js.map(toValue) } };
  return { structValue: toStruct(js) };
}

function toStruct(obj) {
  const fields = {};
  for (const [key, value] of Object.entries(obj)) fields[key] = toValue(value);
  return { fields };
}

function fromTimestamp(ts) {
  if (!ts) return null;
  return new Date(Number(ts.seconds) * 1000 + Math.round((ts.nanos || 0) / 1e6)).toISOString();
}

// -- calls ----------------------------------------------------------------------------------

function load(protoPath) {
  const definition = protoLoader.loadSync(protoPath, {
    keepCase: true, // field names as in the .proto: account_id, has_access, ...
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).plangate.v1;
}

function unary(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + DEADLINE_MS);
    client[method](request, metadata || new grpc.Metadata(), { deadline }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

/** A Resolution as plain JSON: the natural value, the typed values that fit, the metering. */
function resolution(r) {
  const out = {
    feature: r.feature,
    type: r.feature_type,
    value: fromValue(r.value),
    reason: r.reason,
    variant: r.variant,
    has_access: r.has_access,
  };
  if (r.denial) out.denial = r.denial;
  if (r.error_code) {
    out.error_code = r.error_code;
    out.error_message = r.error_message;
  }
  // proto3 `optional` scalars come with a `_name` oneof saying whether they are set
  for (const typed of ["as_boolean", "as_integer", "as_float", "as_string"]) {
    if (r[`_${typed}`] === typed) out[typed] = r[typed];
  }
  if (r.as_object) out.as_object = fromValue(r.as_object);
  if (r.metering) {
    const m = r.metering;
    out.metering = {
      limit: m._limit === "limit" ? m.limit : null,
      used: m.used,
      remaining: m._remaining === "remaining" ? m.remaining : null,
      unlimited: m.unlimited,
      soft_limit: m.soft_limit,
      period_start: fromTimestamp(m.period_start),
      period_end: fromTimestamp(m.period_end),
    };
  }
  out.metadata = fromStruct(r.metadata);
  return out;
}

async function run(opts, ops) {
  const pkg = load(opts.proto);
  const credentials = grpc.credentials.createInsecure();
  const evaluation = new pkg.Evaluation(opts.target, credentials);
  const usageClient = new pkg.Usage(opts.target, credentials);
  const auth = new grpc.Metadata();
  if (opts.token) auth.set("authorization", `Bearer ${opts.token}`);
  const context = opts.requested === undefined ? {} : { requested: opts.requested };

  let failed = false;
  for (const op of ops) {
    let line;
    try {
      if (op.op === "evaluate") {
        const r = await unary(evaluation, "Evaluate", {
          account_id: opts.account,
          feature: op.feature,
          context: toStruct(context),
        });
        line = { op: "evaluate", account: opts.account, ...resolution(r) };
        if (r.error_code) failed = true;
      } else if (op.op === "all") {
        const r = await unary(evaluation, "EvaluateAll", { account_id: opts.account, context: toStruct(context) });
        const features = {};
        for (const key of Object.keys(r.resolutions).sort()) features[key] = fromValue(r.resolutions[key].value);
        line = { op: "all", account: r.account_id, catalog_version: r.catalog_version, features };
        if (r.error_code) {
          line.error_code = r.error_code;
          line.error_message = r.error_message;
          failed = true;
        }
      } else {
        const report = {
          account_id: opts.account,
          feature: op.feature,
          amount: op.amount,
          // a retry of this very report would send the same key and count once
          idempotency_key: crypto.randomUUID(),
        };
        const r = await unary(usageClient, "Report", { reports: [report] }, auth);
        const result = r.results[0];
        line = {
          op: "report",
          account: opts.account,
          feature: op.feature,
          amount: op.amount,
          status: result.status.replace(/^STATUS_/, "").toLowerCase(),
          usage: result.usage,
        };
        if (result.message) line.message = result.message;
        if (result.status !== "STATUS_APPLIED") failed = true;
      }
    } catch (err) {
      failed = true;
      line = { op: op.op, account: opts.account, error: { code: grpc.status[err.code], details: err.details } };
      if (op.feature) line.feature = op.feature;
    }
    process.stdout.write(JSON.stringify(line) + "\n");
  }
  evaluation.close();
  usageClient.close();
  return failed ? 1 : 0;
}

const { opts, ops } = parseArgs(process.argv.slice(2));
run(opts, ops).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`client.js: ${err.stack || err}\n`);
    process.exitCode = 1;
  },
);
