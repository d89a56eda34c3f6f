#!/usr/bin/env node
// An operator's Node.js client of the control plane, with @grpc/grpc-js and
// @grpc/proto-loader over the repository's .proto files.
//
//   PPOS_CONTROL_TOKEN_FILE=~/.ppos/token node tests/interop/node/operator_client.js 127.0.0.1:50051
//   ... operator_client.js 127.0.0.1:50051 --watch --max-events 5 [--region eu-west-1]
//
// The token is read from the file named by PPOS_CONTROL_TOKEN_FILE (never from
// argv, where `ps` shows it). Each result is one JSON line on stdout.
// TLS: PPOS_CA_FILE, and PPOS_CERT_FILE + PPOS_KEY_FILE for mutual TLS (credentials.js).
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { channelCredentials } = require('./credentials');

const PROTOS = path.resolve(__dirname, '..', '..', '..', 'protos');

function load() {
  const definition = protoLoader.loadSync(
    [
      'ppos/controlplane/noderegistry/v1/node_registry_service.proto',
      'ppos/controlplane/auth/v1/jwks_service.proto',
    ],
    { includeDirs: [PROTOS], keepCase: false, longs: String, enums: String, defaults: false, oneofs: true },
  );
  const pkg = grpc.loadPackageDefinition(definition);
  return {
    NodeRegistry: pkg.ppos.controlplane.noderegistry.v1.NodeRegistryService,
    Jwks: pkg.ppos.controlplane.auth.v1.JwksService,
  };
}

function readToken() {
  const file = process.env.PPOS_CONTROL_TOKEN_FILE;
  if (!file) {
    throw new Error('set PPOS_CONTROL_TOKEN_FILE to the file holding the control token');
  }
  return fs.readFileSync(file, 'utf8').replace(/\n$/, '');
}

function operatorMetadata(token) {
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

function emit(record) {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}

function call(client, method, request, metadata) {
  return new Promise((resolve) => {
    const deadline = new Date(Date.now() + 10000);
    const args = metadata ? [request, metadata, { deadline }] : [request, { deadline }];
    client[method](...args, (error, response) => resolve({ error, response }));
  });
}

function failure(error) {
  return { code: error.code, status: grpc.status[error.code], details: error.details };
}

async function unary(address, token) {
  const { NodeRegistry, Jwks } = load();
  const credentials = channelCredentials();
  const jwks = new Jwks(address, credentials);
  const nodes = new NodeRegistry(address, credentials);

  const keys = await call(jwks, 'getJwks', {});
  emit(keys.error ? { step: 'jwks', ...failure(keys.error) }
    : { step: 'jwks', ok: true, activeKid: keys.response.activeKid });

  const refused = await call(nodes, 'createEnrollment', { region: 'eu-west-1' });
  emit({ step: 'without-token', ...(refused.error ? failure(refused.error) : { ok: true }) });

  const created = await call(nodes, 'createEnrollment', { region: 'eu-west-1', cluster: 'node-js' },
    operatorMetadata(token));
  emit(created.error ? { step: 'create-enrollment', ...failure(created.error) }
    : { step: 'create-enrollment', ok: true, enrollmentId: created.response.enrollmentId });

  const missing = await call(nodes, 'getNode', { nodeId: 'node_nosuch' }, operatorMetadata(token));
  emit({ step: 'get-missing-node', ...(missing.error ? failure(missing.error) : { ok: true }) });

  jwks.close();
  nodes.close();
}

function watch(address, token, options) {
  const { NodeRegistry } = load();
  const nodes = new NodeRegistry(address, channelCredentials());
  const request = { filter: options.region ? { region: options.region } : undefined };
  const stream = nodes.watchNodes(request, operatorMetadata(token));
  let counted = 0;
  return new Promise((resolve) => {
    stream.on('data', (message) => {
      for (const event of message.events) {
        emit({
          step: 'watch',
          type: event.type,
          resourceVersion: event.resourceVersion,
          nodeId: event.node ? event.node.nodeId : '',
          readiness: event.node && event.node.status ? event.node.status.readiness : '',
          schedulable: event.node && event.node.spec ? Boolean(event.node.spec.schedulable) : null,
        });
        if (event.type !== 'WATCH_EVENT_TYPE_BOOKMARK') counted += 1;
        if (options.maxEvents && counted >= options.maxEvents) {
          stream.cancel();
        }
      }
    });
    stream.on('error', (error) => {
      if (error.code !== grpc.status.CANCELLED) emit({ step: 'watch-error', ...failure(error) });
    });
    stream.on('close', () => {
      nodes.close();
      resolve();
    });
  });
}

async function main() {
  const args = process.argv.slice(2);
  const address = args[0] && !args[0].startsWith('--') ? args[0] : '127.0.0.1:50051';
  const valueOf = (flag) => { const i = args.indexOf(flag); return i >= 0 ? args[i + 1] : undefined; };
  const token = readToken();
  if (args.includes('--watch')) {
    await watch(address, token, { maxEvents: Number(valueOf('--max-events') || 0), region: valueOf('--region') });
  } else {
    await unary(address, token);
  }
}

main().catch((error) => {
  process.stderr.write(`operator_client: ${error.message}\n`);
  process.exit(2);
});
