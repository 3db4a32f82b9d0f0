/**
 * `make run` / `make demo`: a one-minute tour of the flash engine on this machine, touching no
 * disk. It builds a small sample disk image (partition table, data, long zero runs), compresses
 * it with zstd, serves it from a local HTTP server that drops the connection twice mid-download,
 * flashes it to a regular file with the real `bin/bty` (progress bar, on-the-wire sha256,
 * resume, read-back verification), and checks the result against the original image.
 */
import { spawn } from 'node:child_process';
import { mkdir, rm } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFaultServer } from '../test/helpers/fault-server.ts';
import { convertImage, makeRawImage, sha256File } from '../test/helpers/images.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const work = join(root, '.state', 'demo');
const bty = join(root, 'bin', 'bty');
const MiB = 1 << 20;

function say(text: string): void {
  process.stdout.write(`\n== ${text}\n`);
}

function runBty(args: string[]): Promise<number> {
  process.stdout.write(
    `$ bin/bty ${args.map((a) => (a.includes(root) ? relative(root, a) : a)).join(' ')}\n`,
  );
  return new Promise((resolve, reject) => {
    const child = spawn(bty, args, { stdio: 'inherit' });
    child.on('error', reject);
    child.on('close', (code) => resolve(code ?? 1));
  });
}

async function main(): Promise<void> {
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });

  say('1. building a 256 MiB sample disk image (GPT, 25 % data, long zero runs)');
  const raw = await makeRawImage(join(work, 'sample.img'), { sizeBytes: 256 * MiB, seed: 42 });
  const zst = await convertImage(raw.path, 'img.zst', join(work, 'sample.img.zst'));
  process.stdout.write(
    `raw image ${raw.sha256.slice(0, 16)}...  ->  sample.img.zst (${(zst.sizeBytes / MiB).toFixed(1)} MiB)\n`,
  );

  say('2. serving it over HTTP; the server will cut the connection twice mid-download');
  const server = await startFaultServer();
  server.serve(
    '/images/sample.img.zst',
    { body: { file: zst.path } },
    { cutEveryBytes: Math.floor(zst.sizeBytes / 3), maxCuts: 2, bytesPerSecond: 24 * MiB },
  );
  const url = server.urlFor('/images/sample.img.zst');
  const target = join(work, 'flashed-disk.img');

  try {
    say('3. what bty sees in the image');
    if ((await runBty(['inspect', url])) !== 0) throw new Error('inspect failed');

    say('4. flashing it to a regular file (sha256 checked on the wire, read back after)');
    const code = await runBty(['flash', url, target, '--yes', '--verify', '--sha256', zst.sha256]);
    if (code !== 0) throw new Error(`bty flash exited ${code}`);
  } finally {
    await server.close();
  }

  say('5. checking the result independently');
  const got = await sha256File(target);
  if (got !== raw.sha256) throw new Error(`MISMATCH: target ${got} != image ${raw.sha256}`);
  process.stdout.write(
    `OK: ${relative(root, target)} is bit-identical to the image (sha256 ${got})\n`,
  );

  say('next steps');
  process.stdout.write(
    [
      '  bin/bty disks --all              # disks bty could write, and why others are refused',
      '  bin/bty inspect IMAGE            # format, sizes, architecture, published sha256',
      '  bin/bty flash IMAGE /dev/sdX     # shows the plan and asks before writing',
      '  bin/bty catalog check URL        # validate a catalog.toml',
      '',
    ].join('\n'),
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
