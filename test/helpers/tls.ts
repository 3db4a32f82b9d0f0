/** A throwaway self-signed certificate for 127.0.0.1, made by the real `openssl`. */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export async function makeLoopbackCert(
  dir: string,
): Promise<{ keyFile: string; certFile: string }> {
  const keyFile = join(dir, 'tls.key');
  const certFile = join(dir, 'tls.crt');
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
    '-keyout',
    keyFile,
    '-out',
    certFile,
  ]);
  return { keyFile, certFile };
}
