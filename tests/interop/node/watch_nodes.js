#!/usr/bin/env node
// A Node.js WatchNodes subscriber (@grpc/grpc-js + @grpc/proto-loader) for the
// interop test. It loads the contracts from protos/, watches as an operator and
// prints one JSON line per event, then stops after PPOS_WATCH_CHANGES changes.
//
// Environment (the control token is read from the environment, never argv):
//   PPOS_ADDRESS         host:port of the control plane
//   PPOS_CONTROL_TOKEN   operator token
//   PPOS_PROTO_DIRS      include directories, separated like PATH
//   PPOS_WATCH_CHANGES   ADDED/MODIFIED/DELETED events to wait for (default 1)
//   PPOS_WATCH_REGION    optional region filter
//   PPOS_WATCH_TIMEOUT_MS  give up after this long (default 30000)
//   PPOS_CA_FILE, PPOS_CERT_FILE, PPOS_KEY_FILE  TLS and mutual TLS (credentials.js)
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { channelCredentials } = require('./credentials');

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`watch_nodes.js: ${name} is not set`);
    process.exit(64);
  }
  return value;
}

const address = required('PPOS_ADDRESS');
const token = required('PPOS_CONTROL_TOKEN');
const includeDirs = required('PPOS_PROTO_DIRS').split(path.delimiter);
const wanted = Number(process.env.PPOS_WATCH_CHANGES || '1');
const timeoutMs = Number(process.env.PPOS_WATCH_TIMEOUT_MS || '30000');

const definition = protoLoader.loadSync(
  'ppos/controlplane/noderegistry/v1/node_registry_service.proto',
  { includeDirs, keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
);
const registry = grpc.loadPackageDefinition(definition).ppos.controlplane.noderegistry.v1;
const client = new registry.NodeRegistryService(address, channelCredentials());

const metadata = new grpc.Metadata();
metadata.set('authorization', `Bearer ${token}`);
const request = { filter: { region: process.env.PPOS_WATCH_REGION || '' } };
const call = client.WatchNodes(request, metadata);

const print = (record) => process.stdout.write(`${JSON.stringify(record)}\n`);
const CHANGES = new Set(['WATCH_EVENT_TYPE_ADDED', 'WATCH_EVENT_TYPE_MODIFIED', 'WATCH_EVENT_TYPE_DELETED']);
let changes = 0;
let finished = false;

function finish(code) {
  if (finished) return;
  finished = true;
  clearTimeout(timer);
  call.cancel();
  client.close();
  process.exitCode = code;
}

const timer = setTimeout(() => {
  print({ timeout: true, changes });
  finish(3);
}, timeoutMs);

call.on('data', (response) => {
  for (const event of response.events) {
    const node = event.node || {};
    const status = node.status || {};
    print({
      type: event.type,
      resource_version: event.resource_version,
      node_id: node.node_id || '',
      node_resource_version: (node.meta && node.meta.resource_version) || '',
      readiness: status.readiness || '',
      slots_in_use: status.slots_in_use || 0,
    });
    if (CHANGES.has(event.type)) changes += 1;
  }
  if (changes >= wanted) {
    print({ done: true, changes, messages: 'ok' });
    finish(0);
  }
});

call.on('error', (error) => {
  if (finished && error.code === grpc.status.CANCELLED) return;
  print({ error: error.code, details: error.details });
  finish(2);
});

call.on('end', () => {
  if (!finished) {
    print({ ended: true, changes });
    finish(4);
  }
});
