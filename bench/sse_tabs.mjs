// The browser tabs of bench_portal's fan-out, in Node.js: TABS server-sent event
// streams on one URL, each event's arrival time, the value its data shows, and
// which tab it reached (a tab keeps its number when it reconnects).
//
//   node bench/sse_tabs.mjs URL EVENT PATTERN TABS     (cookie in PPOS_BENCH_COOKIE)
//
// A Python asyncio client reading 200 streams of ~25 KB events saturates its one core
// before the server does; Node parses HTTP in C and keeps up. Times are
// process.hrtime (CLOCK_MONOTONIC on Linux), the clock of Python's time.perf_counter,
// so the caller compares them with its own. PATTERN's first group is the value shown.
// Protocol on stdin/stdout: prints "ready" once every tab's stream is open; "start"
// forgets what arrived so far; "stop" prints the arrivals, and how many times the
// server ended a tab's stream (a tab cut for falling behind; it reconnects at once,
// as a browser's EventSource does), as one JSON line and exits.
import http from "node:http";
import readline from "node:readline";

const [url, event, pattern, tabCount] = process.argv.slice(2);
const shows = new RegExp(pattern, "s");
const cookie = process.env.PPOS_BENCH_COOKIE || "";
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
const arrivals = []; // [seconds, value, tab] of every tab's events
let delivered = 0;
let cuts = 0; // streams the server ended while the tabs ran
let stopping = false;
let opened = 0; // tabs whose stream has answered
const requests = new Set();

function now() {
  return Number(process.hrtime.bigint()) / 1e9;
}

function onEvent(tab, block) {
  const lines = block.split("\n");
  if (!lines.includes(`event: ${event}`)) { return; }
  const at = now();
  const data = lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
  const found = shows.exec(data);
  arrivals.push([at, found ? Number(found[1]) : null, tab]);
  delivered += 1;
}

function open(tab) {
  const request = http.get(url, { agent, headers: { cookie, accept: "text/event-stream" } }, (response) => {
    if (response.statusCode !== 200) {
      process.stderr.write(`tab: HTTP ${response.statusCode} for ${url}\n`);
    }
    opened += 1;
    if (opened === tabs) { process.stdout.write("ready\n"); }
    response.on("end", () => {
      requests.delete(request);
      if (!stopping) { cuts += 1; open(tab); }
    });
    response.setEncoding("utf8");
    let buffer = "";
    response.on("data", (chunk) => {
      buffer += chunk.replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        onEvent(tab, buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    });
  });
  request.on("error", (error) => {
    if (!stopping) { process.stderr.write(`tab: ${error.message}\n`); }
  });
  requests.add(request);
}

const tabs = Number(tabCount);
for (let i = 0; i < tabs; i += 1) { open(i); }

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line === "start") {
    arrivals.length = 0;
    delivered = 0;
    cuts = 0;
  } else if (line === "stop") {
    stopping = true;
    requests.forEach((r) => r.destroy());
    // Exit once written: a pipe is written asynchronously, exit() would cut it.
    process.stdout.write(JSON.stringify({ arrivals, delivered, cuts }) + "\n", () => process.exit(0));
  }
});
