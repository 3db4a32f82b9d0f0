/**
 * The TFTP server in-process on loopback, against the real clients (tftp-hpa, atftp, curl), our
 * own client, and raw UDP sockets where a test needs to see or forge single packets.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tftpGet, TftpClientError } from '../../src/tftp/client.ts';
import { startTftpServer, type TftpServer } from '../../src/tftp/index.ts';
import { encodeAck, encodeRequest, ERR, OP, toNetascii } from '../../src/tftp/packet.ts';
import {
  CLIENTS,
  makeTftpRoot,
  runClient,
  sha256File,
  textFixture,
  type TftpRoot,
} from './fixtures.ts';

const run = promisify(execFile);
const HOST = '127.0.0.1';

let root: TftpRoot;
let server: TftpServer;
let port: number;
const logLines: string[] = [];

beforeAll(async () => {
  root = await makeTftpRoot();
  server = await startTftpServer({
    root: root.dir,
    host: HOST,
    port: 0,
    log: (line) => logLines.push(line),
  });
  port = server.address().port;
});

afterAll(async () => {
  await server?.close();
  await root?.remove();
});

const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** A raw UDP endpoint that collects every packet it receives. */
async function rawSocket(): Promise<{
  socket: Socket;
  packets: Array<{ msg: Buffer; from: RemoteInfo }>;
  next(timeoutMs?: number): Promise<{ msg: Buffer; from: RemoteInfo }>;
  close(): void;
}> {
  const socket = createSocket('udp4');
  const packets: Array<{ msg: Buffer; from: RemoteInfo }> = [];
  let cursor = 0;
  const waiters: Array<() => void> = [];
  socket.on('message', (msg, from) => {
    packets.push({ msg, from });
    waiters.splice(0).forEach((w) => w());
  });
  await new Promise<void>((resolve) => socket.bind(0, HOST, resolve));
  return {
    socket,
    packets,
    async next(timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (cursor >= packets.length) {
        if (Date.now() > deadline) throw new Error('no packet arrived');
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 50);
        });
      }
      return packets[cursor++]!;
    },
    close: () => socket.close(),
  };
}

/** Ends a transfer from the client's side (ERROR 0), waiting until the packet is out. */
function abortTransfer(socket: Socket, tid: number): Promise<void> {
  return new Promise((resolve) =>
    socket.send(Buffer.from('\0\x05\0\0done\0', 'latin1'), tid, HOST, () => resolve()),
  );
}

const opcode = (msg: Buffer) => msg.readUInt16BE(0);
const blockOf = (msg: Buffer) => msg.readUInt16BE(2);
const errorText = (msg: Buffer) => msg.toString('latin1', 4, msg.length - 1);
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('real clients fetch files intact', () => {
  for (const file of ['rand.bin', 'ipxe.efi']) {
    for (const client of CLIENTS) {
      it(`${client.name}: ${file}`, async () => {
        const dest = join(root.out, `${client.name.replace(/\W+/g, '_')}-${file}`);
        await runClient(client.argv(HOST, port, file, dest));
        expect(await sha256File(dest)).toBe(await sha256File(join(root.dir, file)));
      });
    }
  }

  it('takes a leading "/" as relative to the root, as PXE firmware asks', async () => {
    const dest = join(root.out, 'slash.efi');
    await runClient(CLIENTS[0]!.argv(HOST, port, '/ipxe.efi', dest));
    expect(await sha256File(dest)).toBe(await sha256File(join(root.dir, 'ipxe.efi')));
  });

  it('follows a symlink that stays inside the root, and serves files in subfolders', async () => {
    const viaLink = await tftpGet({ host: HOST, port, file: 'inside' });
    expect(sha(viaLink.data)).toBe(await sha256File(join(root.dir, 'rand.bin')));
    const inner = await tftpGet({ host: HOST, port, file: 'sub/inner.bin' });
    expect(sha(inner.data)).toBe(await sha256File(join(root.dir, 'sub', 'inner.bin')));
  });

  it('logs one line per transfer with client, file, bytes, options and outcome', async () => {
    logLines.length = 0;
    await tftpGet({ host: HOST, port, file: 'ipxe.efi', blksize: 1400, tsize: true });
    // The line is written when the server reads the final ACK, just after the client is done.
    for (let i = 0; i < 100 && logLines.length === 0; i++) await pause(20);
    expect(logLines).toHaveLength(1);
    expect(logLines[0]).toMatch(
      /^tftp: 127\.0\.0\.1:\d+ RRQ "ipxe\.efi" octet 850528 bytes \[blksize=1400 tsize=850528\] ok in \d+ ms$/,
    );
  });
});

describe('netascii', () => {
  it('tftp-hpa in ascii mode gets the text back as it is on disk', async () => {
    const dest = join(root.out, 'text-ascii.txt');
    await runClient(['tftp', [HOST, String(port), '-m', 'ascii', '-c', 'get', 'text.txt', dest]]);
    expect(await readFile(dest)).toEqual(textFixture());
  });

  it('sends LF as CR LF and CR as CR NUL, and tsize is the converted size', async () => {
    const expected = toNetascii(textFixture());
    expect(expected.length).toBeGreaterThan(textFixture().length);
    const got = await tftpGet({
      host: HOST,
      port,
      file: 'text.txt',
      mode: 'netascii',
      rawNetascii: true,
      tsize: true,
    });
    expect(got.data).toEqual(expected);
    expect(got.oack?.get('tsize')).toBe(String(expected.length));
  });

  it('converts a file too large to cache in chunks (size unknown up front: no tsize)', async () => {
    const small = await startTftpServer({ root: root.dir, host: HOST, port: 0, cacheBytes: 4096 });
    try {
      const got = await tftpGet({
        host: HOST,
        port: small.address().port,
        file: 'text.txt',
        mode: 'netascii',
        rawNetascii: true,
        tsize: true,
        blksize: 700,
      });
      expect(got.data).toEqual(toNetascii(textFixture()));
      expect(got.oack?.has('tsize')).toBe(false);
      const octet = await tftpGet({ host: HOST, port: small.address().port, file: 'rand.bin' });
      expect(sha(octet.data)).toBe(await sha256File(join(root.dir, 'rand.bin')));
    } finally {
      await small.close();
    }
  });
});

describe('refusals', () => {
  const refused = async (file: string, code: number, text: RegExp) => {
    const err = await tftpGet({ host: HOST, port, file }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TftpClientError);
    expect((err as TftpClientError).code).toBe(code);
    expect((err as Error).message).toMatch(text);
  };

  it('a missing file is ERROR 1', () => refused('nope.bin', ERR.fileNotFound, /file not found/));
  it('"../x" is ERROR 2', () => refused('../out/x', ERR.accessViolation, /"\.\."/));
  it('"/../x" is ERROR 2', () => refused('/../etc/passwd', ERR.accessViolation, /"\.\."/));
  it('"sub/../../x" is ERROR 2', () =>
    refused('sub/../../etc/passwd', ERR.accessViolation, /"\.\."/));
  it('a symlink resolving outside the root is ERROR 2', () =>
    refused('escape', ERR.accessViolation, /outside the root/));
  it('a directory is ERROR 2', () => refused('sub', ERR.accessViolation, /directory/));
  it('the root itself is ERROR 2', () => refused('/', ERR.accessViolation, /not a file/));
  it('a device file is ERROR 2', async () => {
    await run('mknod', [join(root.dir, 'null-device'), 'c', '1', '3']);
    await refused('null-device', ERR.accessViolation, /not a regular file/);
  });

  it('write requests are refused as read-only (tftp-hpa put, and the raw ERROR code)', async () => {
    const local = join(root.out, 'upload.bin');
    await writeFile(local, 'data');
    const { stdout, stderr } = await runClient([
      'tftp',
      [HOST, String(port), '-m', 'binary', '-c', 'put', local, 'upload.bin'],
    ]);
    expect(stdout + stderr).toMatch(/read-only/);
    const raw = await rawSocket();
    try {
      raw.socket.send(encodeRequest(OP.WRQ, 'upload.bin', 'octet'), port, HOST);
      const { msg } = await raw.next();
      expect(opcode(msg)).toBe(OP.ERROR);
      expect(blockOf(msg)).toBe(ERR.accessViolation);
      expect(errorText(msg)).toMatch(/read-only/);
    } finally {
      raw.close();
    }
    await expect(readFile(join(root.dir, 'upload.bin'))).rejects.toThrow(/ENOENT/);
  });

  it('malformed packets are ERROR 4', async () => {
    const raw = await rawSocket();
    try {
      const cases = [
        Buffer.from([0, 1]),
        Buffer.from([0, 1, 0x61, 0x62]), // no NUL
        Buffer.from('\0\x01file\0', 'latin1'), // no mode
        Buffer.from('\0\x01file\0mail\0', 'latin1'),
        Buffer.from('\0\x01\0octet\0', 'latin1'), // empty name
        encodeAck(1), // not a request on the server port
      ];
      for (const packet of cases) {
        raw.socket.send(packet, port, HOST);
        const { msg } = await raw.next();
        expect(opcode(msg)).toBe(OP.ERROR);
        expect(blockOf(msg)).toBe(ERR.illegalOperation);
      }
    } finally {
      raw.close();
    }
  });
});

describe('option negotiation', () => {
  it('answers blksize with what it accepts, and windowsize within its limit', async () => {
    const big = await tftpGet({ host: HOST, port, file: 'ipxe.efi', blksize: 100_000 });
    expect(big.oack?.get('blksize')).toBe('65464');
    expect(sha(big.data)).toBe(await sha256File(join(root.dir, 'ipxe.efi')));
    const max = await tftpGet({ host: HOST, port, file: 'ipxe.efi', blksize: 65464 });
    expect(max.oack?.get('blksize')).toBe('65464');
    const tiny = await tftpGet({ host: HOST, port, file: 'sub/inner.bin', blksize: 8 });
    expect(tiny.oack?.get('blksize')).toBe('8');
    expect(tiny.blocks).toBe(Math.floor(5000 / 8) + 1);
    const window = await tftpGet({ host: HOST, port, file: 'ipxe.efi', windowsize: 1000 });
    expect(window.oack?.get('windowsize')).toBe('64');
    expect(sha(window.data)).toBe(await sha256File(join(root.dir, 'ipxe.efi')));
  });

  it('answers tsize 0 with the file size and echoes timeout', async () => {
    const got = await tftpGet({ host: HOST, port, file: 'rand.bin', tsize: true, timeout: 3 });
    expect(Object.fromEntries(got.oack!)).toEqual({ tsize: '3000000', timeout: '3' });
  });

  it('takes option names in any case, leaves unknown options out of the OACK', async () => {
    const got = await tftpGet({
      host: HOST,
      port,
      file: 'sub/inner.bin',
      extraOptions: [
        ['BlkSize', '1024'],
        ['multicast', ''],
        ['x-unknown', '1'],
      ],
    });
    expect(Object.fromEntries(got.oack!)).toEqual({ blksize: '1024' });
  });

  it('sends DATA at once when no option it knows was asked for', async () => {
    const plain = await tftpGet({ host: HOST, port, file: 'sub/inner.bin' });
    expect(plain.oack).toBeNull();
    const unknown = await tftpGet({
      host: HOST,
      port,
      file: 'sub/inner.bin',
      extraOptions: [['x-unknown', '1']],
    });
    expect(unknown.oack).toBeNull();
    expect(unknown.data.length).toBe(5000);
  });

  for (const [name, value] of [
    ['blksize', '7'],
    ['blksize', 'big'],
    ['windowsize', '0'],
    ['windowsize', '65536'],
    ['timeout', '0'],
    ['timeout', '256'],
    ['tsize', '-1'],
  ] as const) {
    it(`refuses ${name} ${value} with ERROR 8`, async () => {
      const err = await tftpGet({
        host: HOST,
        port,
        file: 'sub/inner.bin',
        extraOptions: [[name, value]],
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TftpClientError);
      expect((err as TftpClientError).code).toBe(ERR.optionRefused);
    });
  }
});

describe('transfer protocol', () => {
  /** A server that never retransmits on its own within a test, so every send we see is caused. */
  let patient: TftpServer;
  let patientPort: number;
  beforeAll(async () => {
    patient = await startTftpServer({
      root: root.dir,
      host: HOST,
      port: 0,
      retransmitMs: 30_000,
      minRetransmitMs: 30_000,
    });
    patientPort = patient.address().port;
  });
  afterAll(() => patient.close());

  it('never lets a stranger into a transfer: the kernel refuses its packets, the client carries on', async () => {
    // The transfer's socket is connected to its client (as tftpd-hpa's is): a packet from any
    // other address or port never reaches the server; the kernel answers it with ICMP port
    // unreachable, which a connected UDP socket reports as ECONNREFUSED.
    const client = await rawSocket();
    const stranger = await rawSocket();
    try {
      client.socket.send(encodeRequest(OP.RRQ, 'rand.bin', 'octet'), patientPort, HOST);
      const first = await client.next();
      expect(opcode(first.msg)).toBe(OP.DATA);
      expect(blockOf(first.msg)).toBe(1);
      const tid = first.from.port;
      expect(tid).not.toBe(patientPort);
      const refused = new Promise<NodeJS.ErrnoException>((resolve) =>
        stranger.socket.once('error', resolve),
      );
      await new Promise<void>((resolve) => stranger.socket.connect(tid, HOST, resolve));
      stranger.socket.send(encodeAck(1));
      expect((await refused).code).toBe('ECONNREFUSED');
      expect(stranger.packets).toHaveLength(0);
      client.socket.send(encodeAck(1), tid, HOST);
      const second = await client.next();
      expect(opcode(second.msg)).toBe(OP.DATA);
      expect(blockOf(second.msg)).toBe(2);
      expect(client.packets).toHaveLength(2); // The stranger's ACK sent nothing to the client.
      await abortTransfer(client.socket, tid);
    } finally {
      client.close();
      stranger.close();
    }
  });

  it("never answers duplicate ACKs with extra DATA (Sorcerer's Apprentice)", async () => {
    const client = await rawSocket();
    try {
      client.socket.send(encodeRequest(OP.RRQ, 'sub/inner.bin', 'octet'), patientPort, HOST);
      const first = await client.next();
      const tid = first.from.port;
      for (let i = 0; i < 4; i++) client.socket.send(encodeAck(1), tid, HOST);
      const second = await client.next();
      expect(blockOf(second.msg)).toBe(2);
      client.socket.send(encodeAck(2), tid, HOST);
      const third = await client.next();
      expect(blockOf(third.msg)).toBe(3);
      // Every DATA so far was caused by a new ACK: 1, 2 and 3, no repeated 2.
      expect(client.packets.map((p) => blockOf(p.msg))).toEqual([1, 2, 3]);
      await abortTransfer(client.socket, tid);
    } finally {
      client.close();
    }
  });

  it('sends a whole window per ACK, and restarts after an earlier block of the window', async () => {
    const client = await rawSocket();
    try {
      const request = encodeRequest(OP.RRQ, 'sub/inner.bin', 'octet', [
        ['blksize', '100'],
        ['windowsize', '4'],
      ]);
      client.socket.send(request, patientPort, HOST);
      const oack = await client.next();
      expect(opcode(oack.msg)).toBe(OP.OACK);
      const tid = oack.from.port;
      client.socket.send(encodeAck(0), tid, HOST);
      const window1 = [await client.next(), await client.next(), await client.next()];
      window1.push(await client.next());
      expect(window1.map((p) => blockOf(p.msg))).toEqual([1, 2, 3, 4]);
      // The client lost block 3: it acknowledges 2, the server resends from 3.
      client.socket.send(encodeAck(2), tid, HOST);
      const window2 = [await client.next(), await client.next(), await client.next()];
      window2.push(await client.next());
      expect(window2.map((p) => blockOf(p.msg))).toEqual([3, 4, 5, 6]);
      expect(window2[0]!.msg.subarray(4)).toEqual(
        (await readFile(join(root.dir, 'sub', 'inner.bin'))).subarray(200, 300),
      );
      client.socket.send(encodeAck(6), tid, HOST);
      const window3 = [await client.next(), await client.next(), await client.next()];
      window3.push(await client.next());
      expect(window3.map((p) => blockOf(p.msg))).toEqual([7, 8, 9, 10]);
      await abortTransfer(client.socket, tid);
    } finally {
      client.close();
    }
  });

  it('ignores an ACK for a block it never sent (one past the window)', async () => {
    const client = await rawSocket();
    try {
      const request = encodeRequest(OP.RRQ, 'sub/inner.bin', 'octet', [
        ['blksize', '100'],
        ['windowsize', '4'],
      ]);
      client.socket.send(request, patientPort, HOST);
      const oack = await client.next();
      const tid = oack.from.port;
      client.socket.send(encodeAck(0), tid, HOST);
      const window1 = [await client.next(), await client.next(), await client.next()];
      window1.push(await client.next());
      expect(window1.map((p) => blockOf(p.msg))).toEqual([1, 2, 3, 4]);
      // Block 5 is not on the wire yet: its ACK is stale or forged, never a reason to send.
      client.socket.send(encodeAck(5), tid, HOST);
      client.socket.send(encodeAck(4), tid, HOST);
      const window2 = [await client.next(), await client.next(), await client.next()];
      window2.push(await client.next());
      expect(window2.map((p) => blockOf(p.msg))).toEqual([5, 6, 7, 8]);
      await abortTransfer(client.socket, tid);
    } finally {
      client.close();
    }
  });

  it('answers a repeated request (first packet lost) without a second transfer', async () => {
    const client = await rawSocket();
    try {
      // Earlier tests' aborts may still be on their way to the server.
      for (let i = 0; i < 100 && patient.activeTransfers > 0; i++) await pause(20);
      const before = patient.activeTransfers;
      expect(before).toBe(0);
      const request = encodeRequest(OP.RRQ, 'rand.bin', 'octet');
      client.socket.send(request, patientPort, HOST);
      const first = await client.next();
      client.socket.send(request, patientPort, HOST);
      const again = await client.next();
      expect(blockOf(again.msg)).toBe(1);
      expect(again.from.port).toBe(first.from.port);
      expect(patient.activeTransfers).toBe(before + 1);
      await abortTransfer(client.socket, first.from.port);
      for (let i = 0; i < 100 && patient.activeTransfers > before; i++) await pause(20);
      expect(patient.activeTransfers).toBe(before);
    } finally {
      client.close();
    }
  });
});

describe('retransmission and limits', () => {
  it('retransmits with backoff, then gives up after the bounded retries with ERROR 0', async () => {
    const lines: string[] = [];
    const giving = await startTftpServer({
      root: root.dir,
      host: HOST,
      port: 0,
      retransmitMs: 40,
      minRetransmitMs: 10,
      maxRetries: 3,
      log: (l) => lines.push(l),
    });
    const client = await rawSocket();
    try {
      client.socket.send(encodeRequest(OP.RRQ, 'rand.bin', 'octet'), giving.address().port, HOST);
      let last;
      do last = await client.next(10_000);
      while (opcode(last.msg) === OP.DATA);
      expect(opcode(last.msg)).toBe(OP.ERROR);
      expect(errorText(last.msg)).toMatch(/timed out/);
      // DATA 1, then 3 retransmissions of it, then the ERROR.
      expect(client.packets.map((p) => opcode(p.msg))).toEqual([3, 3, 3, 3, 5]);
      // The thread that ran the transfer reports its end just after the ERROR left.
      for (let i = 0; i < 100 && giving.activeTransfers > 0; i++) await pause(20);
      expect(giving.activeTransfers).toBe(0);
      expect(lines.join('\n')).toMatch(/"rand\.bin" .*failed: timed out/);
    } finally {
      client.close();
      await giving.close();
    }
  });

  it('refuses requests beyond maxTransfers with ERROR 0 "server busy"', async () => {
    const limited = await startTftpServer({ root: root.dir, host: HOST, port: 0, maxTransfers: 2 });
    const clients = [await rawSocket(), await rawSocket(), await rawSocket()];
    try {
      const p = limited.address().port;
      for (const c of clients.slice(0, 2)) {
        c.socket.send(encodeRequest(OP.RRQ, 'rand.bin', 'octet'), p, HOST);
        expect(opcode((await c.next()).msg)).toBe(OP.DATA);
      }
      expect(limited.activeTransfers).toBe(2);
      clients[2]!.socket.send(encodeRequest(OP.RRQ, 'rand.bin', 'octet'), p, HOST);
      const busy = (await clients[2]!.next()).msg;
      expect(opcode(busy)).toBe(OP.ERROR);
      expect(errorText(busy)).toMatch(/server busy/);
    } finally {
      clients.forEach((c) => c.close());
      await limited.close();
    }
    expect(limited.activeTransfers).toBe(0);
  });

  it('refuses requests beyond maxPerClient from one address, not from another', async () => {
    const limited = await startTftpServer({
      root: root.dir,
      host: '0.0.0.0',
      port: 0,
      maxPerClient: 1,
    });
    const first = await rawSocket();
    const second = await rawSocket();
    try {
      const p = limited.address().port;
      first.socket.send(encodeRequest(OP.RRQ, 'rand.bin', 'octet'), p, HOST);
      expect(opcode((await first.next()).msg)).toBe(OP.DATA);
      second.socket.send(encodeRequest(OP.RRQ, 'rand.bin', 'octet'), p, HOST);
      const busy = (await second.next()).msg;
      expect(opcode(busy)).toBe(OP.ERROR);
      expect(errorText(busy)).toMatch(/server busy: 1 transfers in progress for 127\.0\.0\.1/);
      // Another address is another client.
      const other = createSocket('udp4');
      try {
        await new Promise<void>((resolve) => other.bind(0, '127.0.0.2', resolve));
        const answer = new Promise<Buffer>((resolve) => other.once('message', resolve));
        other.send(encodeRequest(OP.RRQ, 'rand.bin', 'octet'), p, HOST);
        expect(opcode(await answer)).toBe(OP.DATA);
      } finally {
        other.close();
      }
    } finally {
      first.close();
      second.close();
      await limited.close();
    }
  });

  it('serves 120 concurrent transfers intact (no small fixed cap)', async () => {
    const expected = await sha256File(join(root.dir, 'ipxe.efi'));
    const results = await Promise.all(
      Array.from({ length: 120 }, (_, i) =>
        tftpGet({
          host: HOST,
          port,
          file: i % 2 ? 'ipxe.efi' : '/ipxe.efi',
          blksize: 1428,
          windowsize: i % 3 === 0 ? 1 : 8,
          retries: 20,
        }),
      ),
    );
    for (const r of results) expect(sha(r.data)).toBe(expected);
  });

  it('busy-polls only while a lock-step ACK is due: an idle server burns no CPU', async () => {
    const quiet = await startTftpServer({ root: root.dir, host: HOST, port: 0, workers: 0 });
    try {
      // Loopback is fast enough to poll for: a lone lock-step transfer, intact.
      const got = await tftpGet({ host: HOST, port: quiet.address().port, file: 'ipxe.efi' });
      expect(sha(got.data)).toBe(await sha256File(join(root.dir, 'ipxe.efi')));
      // Afterwards the loop sleeps again: a polling loop left running would use the whole wait.
      await new Promise((resolve) => setTimeout(resolve, 50));
      const before = process.cpuUsage();
      await new Promise((resolve) => setTimeout(resolve, 400));
      const used = process.cpuUsage(before);
      expect((used.user + used.system) / 1000).toBeLessThan(200);
    } finally {
      await quiet.close();
    }
  });

  it('close() ends transfers in flight and frees their sockets', async () => {
    const closing = await startTftpServer({ root: root.dir, host: HOST, port: 0 });
    const client = await rawSocket();
    try {
      client.socket.send(encodeRequest(OP.RRQ, 'rand.bin', 'octet'), closing.address().port, HOST);
      await client.next();
      expect(closing.activeTransfers).toBe(1);
      await closing.close();
      expect(closing.activeTransfers).toBe(0);
      let last;
      do last = await client.next();
      while (opcode(last.msg) === OP.DATA);
      expect(errorText(last.msg)).toMatch(/server stopping/);
    } finally {
      client.close();
    }
  });
});

describe('worker threads', () => {
  /** UDP sockets this thread holds (the server's listening one, raw test clients, ...). */
  const udpHandles = () => process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap').length;

  it('keeps a lone transfer on its own thread and spreads the next ones over the workers', async () => {
    for (const workers of [2, 0]) {
      const server = await startTftpServer({
        root: root.dir,
        host: HOST,
        port: 0,
        workers,
        retransmitMs: 30_000,
        minRetransmitMs: 30_000,
      });
      const clients = [await rawSocket(), await rawSocket(), await rawSocket()];
      try {
        const before = udpHandles();
        const tids: number[] = [];
        for (const client of clients) {
          client.socket.send(
            encodeRequest(OP.RRQ, 'rand.bin', 'octet'),
            server.address().port,
            HOST,
          );
          const first = await client.next();
          expect(blockOf(first.msg)).toBe(1);
          tids.push(first.from.port);
        }
        expect(server.activeTransfers).toBe(3);
        // The first transfer's socket is this thread's, the others are the workers' (one each);
        // without workers all three are this thread's.
        expect(udpHandles() - before).toBe(workers > 0 ? 1 : 3);
        await Promise.all(clients.map((c, i) => abortTransfer(c.socket, tids[i]!)));
      } finally {
        clients.forEach((c) => c.close());
        await server.close();
      }
    }
  });

  it('delivers intact files to many clients at once, each transfer logged once', async () => {
    const lines: string[] = [];
    const server = await startTftpServer({
      root: root.dir,
      host: HOST,
      port: 0,
      workers: 3,
      log: (l) => lines.push(l),
    });
    try {
      const p = server.address().port;
      const files = ['ipxe.efi', 'undionly.kpxe', 'rand.bin'];
      const expected = new Map<string, string>();
      for (const f of files) expected.set(f, await sha256File(join(root.dir, f)));
      const ours = Array.from({ length: 30 }, (_, i) => {
        const file = files[i % files.length]!;
        return tftpGet({
          host: HOST,
          port: p,
          file,
          blksize: i % 2 ? 1468 : 512,
          windowsize: i % 3 === 0 ? 1 : 16,
          retries: 20,
        }).then((r) => expect(sha(r.data)).toBe(expected.get(file)));
      });
      const real = CLIENTS.map(async (client, i) => {
        const file = files[i % files.length]!;
        const dest = join(root.out, `workers-${i}-${file}`);
        await runClient(client.argv(HOST, p, file, dest));
        expect(await sha256File(dest)).toBe(expected.get(file));
      });
      await Promise.all([...ours, ...real]);
      const total = ours.length + real.length;
      for (let i = 0; i < 100 && lines.length < total; i++) await pause(20);
      expect(lines).toHaveLength(total);
      for (const line of lines)
        expect(line).toMatch(/^tftp: 127\.0\.0\.1:\d+ RRQ ".+" .* ok in \d+ ms$/);
      expect(server.activeTransfers).toBe(0);
    } finally {
      await server.close();
    }
  });

  it('close() ends transfers in flight, stops its workers and leaves no handle behind', async () => {
    /** Sockets and worker threads (message ports) this thread holds. */
    const handles = () =>
      process
        .getActiveResourcesInfo()
        .filter((r) => r === 'UDPWrap' || r === 'MessagePort')
        .sort();
    const before = handles();
    const client = await rawSocket();
    const server = await startTftpServer({ root: root.dir, host: HOST, port: 0, workers: 3 });
    try {
      const ports = (list: string[]) => list.filter((r) => r === 'MessagePort').length;
      expect(ports(handles())).toBe(ports(before) + 3);
      client.socket.send(encodeRequest(OP.RRQ, 'rand.bin', 'octet'), server.address().port, HOST);
      await client.next();
      expect(server.activeTransfers).toBe(1);
    } finally {
      await server.close();
    }
    expect(server.activeTransfers).toBe(0);
    let last;
    do last = await client.next();
    while (opcode(last.msg) === OP.DATA);
    expect(errorText(last.msg)).toMatch(/server stopping/);
    client.close();
    for (let i = 0; i < 50 && handles().length > before.length; i++) await pause(20);
    expect(handles()).toEqual(before);
  });
});

describe('block numbers past 65535', () => {
  let big: string;
  let bigSha: string;
  beforeAll(async () => {
    // 65535 * 512 + 70_000 bytes: block numbers wrap to 0 and count on (read in chunks: > cache).
    const bytes = randomBytes(65535 * 512 + 70_000);
    big = join(root.dir, 'big.bin');
    await writeFile(big, bytes);
    bigSha = sha(bytes);
  });

  it('our client, blksize 512, windowsize 16 (windows spanning the wrap)', async () => {
    const got = await tftpGet({ host: HOST, port, file: 'big.bin', blksize: 512, windowsize: 16 });
    expect(got.blocks).toBeGreaterThan(65536);
    expect(sha(got.data)).toBe(bigSha);
  });

  it('curl with blksize 512 (one block per ACK)', async () => {
    const dest = join(root.out, 'big-curl.bin');
    await runClient(CLIENTS.find((c) => c.name === 'curl')!.argv(HOST, port, 'big.bin', dest));
    expect(await sha256File(dest)).toBe(bigSha);
  });
});
