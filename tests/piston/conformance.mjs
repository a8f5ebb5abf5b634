// Runs Piston's own package test programs through unsandbox's
// Piston-compatible API with the real piston-client, exactly as a Piston
// user would: the client's defaults included (args ["1", "2", "3"], empty
// stdin, the latest version). Prints one JSON object: for each case id,
// what the client returned. Usage: node conformance.mjs URL CASES.json,
// where CASES.json is [{id, language, content}], run two at a time
// (as many as a small host's cores; Piston's CI runs them one by one).
import { readFileSync } from "node:fs";
import piston from "piston-client";

const [server, casesFile] = process.argv.slice(2);
if (!server || !casesFile) {
  console.error("usage: node conformance.mjs URL CASES.json");
  process.exit(2);
}
const client = piston({ server });
const cases = JSON.parse(readFileSync(casesFile, "utf8"));
const out = {};
let next = 0;
async function worker() {
  while (next < cases.length) {
    const c = cases[next++];
    try {
      out[c.id] = await client.execute(c.language, c.content);
    } catch (e) {
      out[c.id] = { thrown: String(e) };
    }
    if (out[c.id] && out[c.id].error instanceof Error) {
      out[c.id].error = String(out[c.id].error);
    }
  }
}
await Promise.all([worker(), worker()]);
console.log(JSON.stringify(out));
