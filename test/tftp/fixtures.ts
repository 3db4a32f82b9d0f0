/** A TFTP root with real files, and the real TFTP clients (tftp-hpa, atftp, curl) as tests run them. */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const IPXE_EFI = '/usr/lib/ipxe/ipxe.efi';
export const UNDIONLY_KPXE = '/usr/lib/ipxe/undionly.kpxe';

export interface TftpRoot {
  dir: string;
  /** Where clients write what they fetched (outside the root). */
  out: string;
  remove(): Promise<void>;
}

/**
 * root/rand.bin (3 MB random), root/ipxe.efi and root/undionly.kpxe (Debian's), root/text.txt (LF, CR LF and bare CR
 * lines), root/sub/ (a folder), root/sub/inner.bin, root/escape -> /etc/hostname,
 * root/inside -> rand.bin.
 */
export async function makeTftpRoot(): Promise<TftpRoot> {
  const base = await mkdtemp(join(tmpdir(), 'bty-tftp-'));
  const dir = join(base, 'root');
  const out = join(base, 'out');
  await mkdir(join(dir, 'sub'), { recursive: true });
  await mkdir(out);
  await writeFile(join(dir, 'rand.bin'), randomBytes(3_000_000));
  await copyFile(IPXE_EFI, join(dir, 'ipxe.efi'));
  await copyFile(UNDIONLY_KPXE, join(dir, 'undionly.kpxe'));
  await writeFile(join(dir, 'text.txt'), textFixture());
  await writeFile(join(dir, 'sub', 'inner.bin'), randomBytes(5000));
  await symlink('/etc/hostname', join(dir, 'escape'));
  await symlink('rand.bin', join(dir, 'inside'));
  return { dir, out, remove: () => rm(base, { recursive: true, force: true }) };
}

/** Text with every case netascii converts: LF, CR LF, a bare CR, a trailing CR. */
export function textFixture(): Buffer {
  const lines: string[] = [];
  for (let i = 0; i < 400; i++) lines.push(`line ${i}: ${'x'.repeat(i % 70)}\n`);
  lines.push('dos line\r\n', 'bare\rcarriage return\n', 'ends with cr\r');
  return Buffer.from(lines.join(''), 'latin1');
}

export async function sha256File(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

export interface ClientRun {
  /** What the report names it. */
  name: string;
  /** argv fetching `file` from host:port into `dest`. */
  argv(host: string, port: number, file: string, dest: string): [string, string[]];
}

/** Each real client, with and without the options it supports. */
export const CLIENTS: ClientRun[] = [
  {
    // tftp-hpa's client knows no options: plain RFC 1350.
    name: 'tftp-hpa',
    argv: (host, port, file, dest) => [
      'tftp',
      [host, String(port), '-m', 'binary', '-c', 'get', file, dest],
    ],
  },
  {
    name: 'atftp',
    argv: (host, port, file, dest) => ['atftp', ['-g', '-r', file, '-l', dest, host, String(port)]],
  },
  {
    name: 'atftp blksize 1468',
    argv: (host, port, file, dest) => [
      'atftp',
      ['--option', 'blksize 1468', '-g', '-r', file, '-l', dest, host, String(port)],
    ],
  },
  {
    name: 'atftp blksize 1468 windowsize 8',
    argv: (host, port, file, dest) => [
      'atftp',
      [
        ...['--option', 'blksize 1468', '--option', 'windowsize 8', '--option', 'tsize 0'],
        ...['-g', '-r', file, '-l', dest, host, String(port)],
      ],
    ],
  },
  {
    // curl asks for tsize, blksize 512 and a timeout by default.
    name: 'curl',
    argv: (host, port, file, dest) => [
      'curl',
      ['-sS', '--fail', '-o', dest, `tftp://${host}:${port}/${file}`],
    ],
  },
  {
    name: 'curl --tftp-no-options',
    argv: (host, port, file, dest) => [
      'curl',
      ['-sS', '--fail', '--tftp-no-options', '-o', dest, `tftp://${host}:${port}/${file}`],
    ],
  },
  {
    name: 'curl --tftp-blksize 8192',
    argv: (host, port, file, dest) => [
      'curl',
      ['-sS', '--fail', '--tftp-blksize', '8192', '-o', dest, `tftp://${host}:${port}/${file}`],
    ],
  },
];

/** Runs a client to completion (killed after `timeoutMs`), behind `prefix` (e.g. ip netns exec …). */
export async function runClient(
  argv: [string, string[]],
  timeoutMs = 120_000,
  prefix: string[] = [],
): Promise<{ stdout: string; stderr: string }> {
  const [command, ...args] = [...prefix, argv[0], ...argv[1]];
  return run(command!, args, { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8' });
}
