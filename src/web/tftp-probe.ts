/**
 * Is a TFTP server answering at host:port? One read request (RFC 1350) for a boot file and the
 * first reply: DATA or an option acknowledgement means it serves the file, an ERROR means it
 * answers but lacks it, silence means nothing listens. A transfer it started is aborted with an
 * ERROR packet so the server does not keep retransmitting. Never throws.
 */
import { createSocket } from 'node:dgram';
import { isIP } from 'node:net';

export type TftpProbe =
  | { state: 'serving'; detail: string }
  | { state: 'missing-file'; detail: string }
  | { state: 'silent'; detail: string };

const OP_RRQ = 1;
const OP_DATA = 3;
const OP_ERROR = 5;
const OP_OACK = 6;

export function probeTftp(
  host: string,
  port: number,
  file: string,
  timeoutMs = 1000,
): Promise<TftpProbe> {
  const where = `${host}:${port}`;
  return new Promise((resolve) => {
    const socket = createSocket(isIP(host) === 6 ? 'udp6' : 'udp4');
    let settled = false;
    const finish = (result: TftpProbe) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.close();
      resolve(result);
    };
    const timer = setTimeout(
      () =>
        finish({ state: 'silent', detail: `no TFTP reply from ${where} within ${timeoutMs} ms` }),
      timeoutMs,
    );
    socket.on('error', (err) => finish({ state: 'silent', detail: `${where}: ${err.message}` }));
    socket.on('message', (msg, from) => {
      const op = msg.length >= 2 ? msg.readUInt16BE(0) : 0;
      if (op === OP_DATA || op === OP_OACK) {
        // Abort the transfer we started (ERROR code 0), from the port it answered to.
        const abort = Buffer.concat([Buffer.from([0, OP_ERROR, 0, 0]), Buffer.from('probe\0')]);
        socket.send(abort, from.port, from.address, () =>
          finish({ state: 'serving', detail: `${where} serves ${file}` }),
        );
        return;
      }
      if (op === OP_ERROR) {
        const text = msg.subarray(4).toString('latin1').replace(/\0.*$/s, '');
        finish({ state: 'missing-file', detail: `${where} answered: ${text || 'error'}` });
        return;
      }
      finish({ state: 'missing-file', detail: `${where} sent an unexpected reply` });
    });
    const request = Buffer.concat([
      Buffer.from([0, OP_RRQ]),
      Buffer.from(`${file}\0octet\0`, 'latin1'),
    ]);
    socket.send(request, port, host);
  });
}
