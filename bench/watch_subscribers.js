#!/usr/bin/env node
// WatchNodes subscribers for the fan-out benchmark (@grpc/grpc-js): many
// streams in one process, a few per connection, cheap enough per message that
// the load generator does not starve the server it measures on a small machine.
//
// Environment: PPOS_ADDRESS, PPOS_CONTROL_TOKEN (never argv), PPOS_PROTO_DIRS.
// stdin, one JSON line first: {"count": N, "per_connection": K, "sampled": S,
// "resume_from": V (0: start with a snapshot), "bookmark_seconds": B,
// "flow_control_window": W (bytes)};
// then commands: "phase NAME", "pause", "report", "quit". stdout: JSON lines.
// The first S subscribers read every event of every message and record, for
// each MODIFIED event, receive time minus the node's last_heartbeat_time (1-ms
// histogram); the others take the bytes as they come. The sampled ones read
// the protobuf wire format for just those fields (`scan`) instead of decoding
// whole messages into objects: a full decode of 200 changes/s on 200 streams
// cost the load generator more CPU than the server it measures. Their first
// messages are also decoded in full and compared, so a scanner error shows.
'use strict';

const path = require('path');
const readline = require('readline');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const BUCKETS = 10000;
const CHECKED_MESSAGES = 3; // per sampled stream: scanned and fully decoded, compared
// Field numbers (node_registry_service.proto, node.proto, timestamp.proto).
const EVENTS = 1; // WatchNodesResponse.events
const EVENT_TYPE = 1; // WatchEvent.type
const EVENT_NODE = 3; // WatchEvent.node
const NODE_STATUS = 4; // Node.status
const STATUS_LAST_HEARTBEAT = 4; // NodeStatus.last_heartbeat_time
const SNAPSHOT_END = 2;
const MODIFIED = 4;
const BOOKMARK = 6;
const TYPE_NAMES = [
  'UNSPECIFIED', 'SNAPSHOT', 'SNAPSHOT_END', 'ADDED', 'MODIFIED', 'DELETED', 'BOOKMARK', 'RESYNC_REQUIRED',
].map((name) => `WATCH_EVENT_TYPE_${name}`);
const METHOD = '/ppos.controlplane.noderegistry.v1.NodeRegistryService/WatchNodes';
const address = process.env.PPOS_ADDRESS;
const token = process.env.PPOS_CONTROL_TOKEN;
const includeDirs = process.env.PPOS_PROTO_DIRS.split(path.delimiter);

const definition = protoLoader.loadSync(
  'ppos/controlplane/noderegistry/v1/node_registry_service.proto',
  { includeDirs, keepCase: true, longs: Number, enums: String, defaults: false },
);
const watch = definition['ppos.controlplane.noderegistry.v1.NodeRegistryService'].WatchNodes;
const emit = (record) => process.stdout.write(`${JSON.stringify(record)}\n`);
const nowMs = () => performance.timeOrigin + performance.now();

const histograms = {};
const counts = {};
const errors = [];
let phase = null;
let synced = 0;
let config = null;
const clients = [];
const calls = [];

// -- a minimal protobuf wire reader: varints and length-delimited fields ----

function varint(buf, at) {
  let value = 0;
  let scale = 1;
  for (;;) {
    const byte = buf[at.pos];
    at.pos += 1;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return value;
    scale *= 128;
  }
}

// Calls visit(field, wireType, start, end) for each field of buf[start, end);
// for varints start is the value.
function fields(buf, start, end, visit) {
  const at = { pos: start };
  while (at.pos < end) {
    const key = varint(buf, at);
    const field = Math.floor(key / 8);
    const wireType = key & 7;
    if (wireType === 0) {
      visit(field, 0, varint(buf, at), 0);
    } else if (wireType === 2) {
      const length = varint(buf, at);
      visit(field, 2, at.pos, at.pos + length);
      at.pos += length;
    } else if (wireType === 5) {
      at.pos += 4;
    } else if (wireType === 1) {
      at.pos += 8;
    } else {
      throw new Error(`unexpected wire type ${wireType}`);
    }
  }
}

function field(buf, start, end, wanted) {
  let found = null;
  fields(buf, start, end, (number, wireType, from, to) => {
    if (number === wanted && wireType === 2) found = [from, to];
  });
  return found;
}

function timestampMs(buf, span) {
  let seconds = 0;
  let nanos = 0;
  fields(buf, span[0], span[1], (number, wireType, value) => {
    if (number === 1 && wireType === 0) seconds = value;
    else if (number === 2 && wireType === 0) nanos = value;
  });
  return seconds * 1000 + nanos / 1e6;
}

// The events of a WatchNodesResponse: [{type, heartbeatMs}] (heartbeatMs of
// MODIFIED events only).
function scan(buf) {
  const events = [];
  fields(buf, 0, buf.length, (number, wireType, start, end) => {
    if (number !== EVENTS || wireType !== 2) return;
    let type = 0;
    let node = null;
    fields(buf, start, end, (inner, innerType, from, to) => {
      if (inner === EVENT_TYPE && innerType === 0) type = from;
      else if (inner === EVENT_NODE && innerType === 2) node = [from, to];
    });
    let heartbeatMs = null;
    if (type === MODIFIED && node !== null) {
      const status = field(buf, node[0], node[1], NODE_STATUS);
      const stamp = status && field(buf, status[0], status[1], STATUS_LAST_HEARTBEAT);
      heartbeatMs = stamp ? timestampMs(buf, stamp) : 0;
    }
    events.push({ type, heartbeatMs });
  });
  return events;
}

// The same facts from a full decode by @grpc/proto-loader.
function decoded(buf) {
  return watch.responseDeserialize(buf).events.map((event) => {
    const stamp = event.node && event.node.status && event.node.status.last_heartbeat_time;
    const modified = event.type === TYPE_NAMES[MODIFIED];
    return {
      type: event.type,
      heartbeatMs: modified ? (stamp ? stamp.seconds * 1000 + (stamp.nanos || 0) / 1e6 : 0) : null,
    };
  });
}

function check(buf, events) {
  const expected = decoded(buf);
  const same = expected.length === events.length && expected.every(
    (e, i) => e.type === TYPE_NAMES[events[i].type] && e.heartbeatMs === events[i].heartbeatMs,
  );
  if (!same) errors.push('SCAN_MISMATCH');
}

function subscribe(index) {
  const client = clients[Math.floor(index / config.per_connection)];
  const measured = index < config.sampled;
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${token}`);
  const request = {
    resume_from_version: config.resume_from || 0,
    bookmark_interval: { seconds: config.bookmark_seconds || 10 },
  };
  const call = client.makeServerStreamRequest(
    METHOD,
    watch.requestSerialize,
    (bytes) => bytes,
    request,
    metadata,
  );
  let inSync = false;
  let checked = 0;
  call.on('data', (message) => {
    if (!measured) {
      if (!inSync) {
        inSync = true;
        synced += 1;
        if (synced === config.count) emit({ ready: config.count });
      }
      return;
    }
    const now = nowMs();
    const events = scan(message);
    if (checked < CHECKED_MESSAGES) {
      checked += 1;
      check(message, events);
    }
    for (const event of events) {
      const syncs = event.type === SNAPSHOT_END || event.type === BOOKMARK;
      if (syncs && !inSync) {
        inSync = true;
        synced += 1;
        if (synced === config.count) emit({ ready: config.count });
      } else if (event.type === MODIFIED && phase !== null) {
        const latency = now - event.heartbeatMs;
        const bucket = Math.min(BUCKETS - 1, Math.max(0, Math.floor(latency)));
        histograms[phase][bucket] += 1;
        counts[phase] += 1;
      }
    }
  });
  call.on('error', (error) => {
    if (error.code !== grpc.status.CANCELLED) errors.push(grpc.status[error.code] || String(error.code));
  });
  calls.push(call);
}

function command(line) {
  if (config === null) {
    config = JSON.parse(line);
    const connections = Math.ceil(config.count / config.per_connection);
    for (let i = 0; i < connections; i += 1) {
      // A client of its own per connection (no shared subchannel pool).
      clients.push(new grpc.Client(address, grpc.credentials.createInsecure(), {
        'grpc.use_local_subchannel_pool': 1,
        // HTTP/2 window per stream and per connection. grpc-js keeps a static
        // 64 KB (no BDP probing, unlike gRPC core, Go and Java clients, whose
        // windows grow to megabytes): ten streams then share 64 KB per round
        // trip, and every fan-out waits on this CPU-starved process's
        // WINDOW_UPDATEs instead of measuring the server.
        'grpc-node.flow_control_window': config.flow_control_window,
      }));
    }
    for (let i = 0; i < config.count; i += 1) subscribe(i);
    return;
  }
  if (line.startsWith('phase ')) {
    phase = line.slice(6);
    if (!histograms[phase]) {
      histograms[phase] = new Array(BUCKETS).fill(0);
      counts[phase] = 0;
    }
  } else if (line === 'pause') {
    phase = null;
  } else if (line === 'report') {
    emit({ histograms, counts, errors: [...new Set(errors)] });
  } else if (line === 'quit') {
    for (const call of calls) call.cancel();
    for (const client of clients) client.close();
    process.exit(0);
  }
}

readline.createInterface({ input: process.stdin }).on('line', (line) => command(line.trim()));
