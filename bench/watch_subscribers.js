#!/usr/bin/env node
// WatchNodes subscribers for the fan-out benchmark (@grpc/grpc-js): many
// streams in one process, a few per connection, cheap enough per message that
// the load generator does not starve the server it measures on a small machine.
//
// Environment: PPOS_ADDRESS, PPOS_CONTROL_TOKEN (never argv), PPOS_PROTO_DIRS.
// stdin, one JSON line first: {"count": N, "per_connection": K, "sampled": S,
// "resume_from": V (0: start with a snapshot), "bookmark_seconds": B};
// then commands: "phase NAME", "pause", "report", "quit". stdout: JSON lines.
// The first S subscribers decode every message and record, for each MODIFIED
// event, receive time minus the node's last_heartbeat_time (1-ms histogram);
// the others take the bytes as they come.
'use strict';

const path = require('path');
const readline = require('readline');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const BUCKETS = 10000;
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
    measured ? watch.responseDeserialize : (bytes) => bytes,
    request,
    metadata,
  );
  let inSync = false;
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
    for (const event of message.events) {
      const syncs = event.type === 'WATCH_EVENT_TYPE_SNAPSHOT_END' || event.type === 'WATCH_EVENT_TYPE_BOOKMARK';
      if (syncs && !inSync) {
        inSync = true;
        synced += 1;
        if (synced === config.count) emit({ ready: config.count });
      } else if (event.type === 'WATCH_EVENT_TYPE_MODIFIED' && phase !== null) {
        const stamp = event.node.status.last_heartbeat_time;
        const latency = now - (stamp.seconds * 1000 + (stamp.nanos || 0) / 1e6);
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
