// Channel credentials of the Node.js examples, from the same variables pposctl
// reads: PPOS_CA_FILE turns TLS on (the CA bundle the plane's certificate is
// checked against); PPOS_CERT_FILE and PPOS_KEY_FILE add a client certificate
// for mutual TLS. Without PPOS_CA_FILE: plaintext (a loopback plane).
'use strict';

const fs = require('fs');
const grpc = require('@grpc/grpc-js');

function channelCredentials(env = process.env) {
  if (!env.PPOS_CA_FILE) {
    if (env.PPOS_CERT_FILE || env.PPOS_KEY_FILE) {
      throw new Error('PPOS_CERT_FILE and PPOS_KEY_FILE need PPOS_CA_FILE (TLS) too');
    }
    return grpc.credentials.createInsecure();
  }
  if (Boolean(env.PPOS_CERT_FILE) !== Boolean(env.PPOS_KEY_FILE)) {
    throw new Error('give PPOS_CERT_FILE and PPOS_KEY_FILE together');
  }
  const read = (name) => (env[name] ? fs.readFileSync(env[name]) : null);
  return grpc.credentials.createSsl(read('PPOS_CA_FILE'), read('PPOS_KEY_FILE'), read('PPOS_CERT_FILE'));
}

module.exports = { channelCredentials };
