// Drives unsandbox's Piston-compatible API with the real piston-client
// package, exactly as a Piston user would, and prints what the client
// returned for each case as one JSON object (tests/e2e_piston.rs asserts on
// it). Usage: node check.mjs http://127.0.0.1:PORT
import piston from "piston-client";

const server = process.argv[2];
if (!server) {
  console.error("usage: node check.mjs http://127.0.0.1:PORT");
  process.exit(2);
}
const client = piston({ server });
const b64 = (s) => Buffer.from(s).toString("base64");
const hex = (s) => Buffer.from(s).toString("hex");

const cases = {
  runtimes: () => client.runtimes(),
  stdin: () => client.execute("python", "print(input())", { stdin: "hello piston" }),
  alias: () => client.execute("py", "import sys; print(sys.argv[1:])"),
  error: () => client.execute("python", "raise ValueError('boom')"),
  timeout: () => client.execute("python", "while True: pass", { runTimeout: 1000 }),
  unknown: () => client.execute("cobol", "DISPLAY 'x'."),
  args: () => client.execute("bash", 'echo "$#:$@"', { args: ["a", "b c"] }),
  version_range: () => client.execute("lua", "print(_VERSION)", { version: "5.x" }),
  wrong_version: () => client.execute("lua", "print(1)", { version: "9.9.9" }),
  files: () =>
    client.execute({
      language: "python",
      files: [
        { name: "prog.py", content: "import helper, sys\nprint(helper.X, open('data.bin').read(), open('raw.txt').read())" },
        { name: "helper.py", content: "X = 42" },
        { name: "data.bin", content: b64("from-base64"), encoding: "base64" },
        { name: "raw.txt", content: hex("from-hex"), encoding: "hex" },
      ],
      args: [],
    }),
  compiled: () =>
    client.execute("bashc", '#!/bin/bash\nread -r x\necho "compiled $x $1"', { stdin: "in", args: ["arg"] }),
  compile_error: () => client.execute("bashc", "#!/bin/bash\nif then fi"),
  busy: () =>
    client.execute(
      "python",
      "s = 0\nfor i in range(3000000):\n    s += i\nb = bytearray(40 * 1024 * 1024)\nprint(s)",
      { runTimeout: 10000 }
    ),
  too_much_memory: () => client.execute("python", "print(1)", { runMemoryLimit: 64 * 1024 * 1024 * 1024 }),
};

const out = {};
for (const [name, run] of Object.entries(cases)) {
  try {
    out[name] = await run();
  } catch (e) {
    out[name] = { thrown: String(e) };
  }
  // piston-client returns transport errors as {success: false, error}.
  if (out[name] && out[name].error instanceof Error) {
    out[name].error = String(out[name].error);
  }
}
console.log(JSON.stringify(out));
