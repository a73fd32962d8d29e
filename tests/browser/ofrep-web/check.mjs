// Sets up the OFREP web provider for ?ofrep=<base URL>&account=<id>, with polling off so a
// change can only arrive through the event stream, and records what a test reads back:
// window.check.ready, window.check.changes (ConfigurationChanged events), window.check.evaluate.
import { OpenFeature, ProviderEvents } from "@openfeature/web-sdk";
import { OFREPWebProvider } from "@openfeature/ofrep-web-provider";

const query = new URLSearchParams(location.search);
const check = { ready: false, error: null, changes: [] };
window.check = check;

OpenFeature.addHandler(ProviderEvents.ConfigurationChanged, (details) => {
  check.changes.push(details?.flagsChanged ?? []);
});
OpenFeature.addHandler(ProviderEvents.Error, (details) => {
  check.error = details?.message ?? "error";
});

const provider = new OFREPWebProvider({
  baseUrl: query.get("ofrep"),
  pollInterval: 0,
  changeDetection: "sse",
  cacheMode: "disabled",
});
const client = OpenFeature.getClient();
check.evaluate = (flag) => {
  const d = client.getBooleanDetails(flag, false);
  return { value: d.value, reason: d.reason, variant: d.variant, metadata: d.flagMetadata,
           errorCode: d.errorCode ?? null };
};

OpenFeature.setContext({ targetingKey: query.get("account") })
  .then(() => OpenFeature.setProviderAndWait(provider))
  .then(() => { check.ready = true; })
  .catch((e) => { check.error = String(e); });
