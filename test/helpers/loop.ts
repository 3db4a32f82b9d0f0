/**
 * Real loop devices for tests: a sparse backing file attached with `losetup`, optionally with a
 * GPT of two partitions, and a way to mount one. Every helper undoes itself and is idempotent,
 * so an `afterAll` can call it whatever state the test left.
 */
import { execFile } from 'node:child_process';
import { access, mkdtemp, open, readFile, rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe } from 'vitest';

const run = promisify(execFile);
const MiB = 1024 * 1024;

export interface LoopDevice {
  /** `/dev/loopN`. */
  path: string;
  backingFile: string;
  /** Partition nodes (`/dev/loopNp1`, `/dev/loopNp2`) when created with `partitions: true`. */
  partitions: string[];
  /** Detaches the device (nothing is unmounted) and removes the backing file. Idempotent. */
  detach: () => Promise<void>;
}

export interface LoopDeviceOptions {
  sizeBytes: number;
  /** Attach with `losetup -r`. */
  readOnly?: boolean;
  /** A GPT with two partitions, each about half the device. */
  partitions?: boolean;
  /** Where the temp folder for the backing file is created (default: the OS temp folder). */
  backingDir?: string;
  /** Logical sector size (`losetup -b`), e.g. 4096 for a 4Kn disk. */
  sectorSize?: number;
  /**
   * Name of the backing file (default `disk.img`). The agent's loop identity is derived from it
   * (`loop-<name>`), so tests that target a loop device by serial give it a unique name.
   */
  fileName?: string;
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** `describe` that runs only as root, and says so in the test name when skipped. */
export function describeIfRoot(name: string, body: () => void): void {
  if (isRoot()) describe(name, body);
  else describe.skip(`${name} [skipped: needs root for loop devices and mounts]`, body);
}

export async function createLoopDevice(options: LoopDeviceOptions): Promise<LoopDevice> {
  const dir = await mkdtemp(join(resolve(options.backingDir ?? tmpdir()), 'bty-loop-'));
  const backingFile = join(dir, options.fileName ?? 'disk.img');
  const file = await open(backingFile, 'w');
  try {
    await file.truncate(options.sizeBytes); // sparse: no blocks allocated
  } finally {
    await file.close();
  }
  if (options.partitions) {
    // Partition the file before attaching so read-only devices can have partitions too.
    const half = Math.max(1, Math.floor(options.sizeBytes / 2 / MiB));
    await runWithInput('sfdisk', ['-q', backingFile], `label: gpt\n,${half}MiB\n,\n`);
  }

  const args = ['--find', '--show'];
  if (options.readOnly) args.push('-r');
  if (options.partitions) args.push('-P');
  if (options.sectorSize) args.push('-b', String(options.sectorSize));
  let path: string;
  try {
    path = (await run('losetup', [...args, backingFile])).stdout.trim();
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  let detached = false;
  const detach = async () => {
    if (detached) return;
    detached = true;
    // Only detach if the device still belongs to us: a parallel test may have reused the number.
    const backing = await readFile(`/sys/block/${basename(path)}/loop/backing_file`, 'utf8').catch(
      () => '',
    );
    if (backing.trim() === backingFile) {
      await run('losetup', ['-d', path]).catch(() => undefined);
    }
    await rm(dir, { recursive: true, force: true });
  };

  try {
    const partitions = options.partitions ? await ensurePartitionNodes(path, 2) : [];
    return { path, backingFile, partitions, detach };
  } catch (err) {
    await detach();
    throw err;
  }
}

/** Formats a partition as ext4 and mounts it on a temp folder. `unmount()` is idempotent. */
export async function mountPartition(
  device: string,
): Promise<{ mountpoint: string; unmount: () => Promise<void> }> {
  await run('mkfs.ext4', ['-q', '-F', device]);
  const mountpoint = await mkdtemp(join(tmpdir(), 'bty-mnt-'));
  try {
    await run('mount', [device, mountpoint]);
  } catch (err) {
    await rmdir(mountpoint).catch(() => undefined);
    throw err;
  }
  let mounted = true;
  return {
    mountpoint,
    unmount: async () => {
      if (!mounted) return;
      mounted = false;
      await run('umount', [mountpoint]).catch(() => undefined);
      await rmdir(mountpoint).catch(() => undefined);
    },
  };
}

/**
 * Partition nodes of a loop device. `losetup -P` usually creates them; `partx` makes the kernel
 * read the table when it did not, and `mknod` covers a /dev without devtmpfs updates.
 */
async function ensurePartitionNodes(device: string, count: number): Promise<string[]> {
  const nodes = Array.from({ length: count }, (_, i) => `${device}p${i + 1}`);
  const name = basename(device);
  const inSysfs = (node: string) => exists(`/sys/block/${name}/${basename(node)}/dev`);
  if (!(await Promise.all(nodes.map(inSysfs))).every(Boolean)) {
    await run('partx', ['-a', device]).catch(() => run('partx', ['-u', device]));
  }
  for (const node of nodes) {
    if (!(await waitFor(() => inSysfs(node)))) {
      throw new Error(`partition ${node} did not appear after partx`);
    }
    if (!(await waitFor(() => exists(node)))) {
      const devno = (await readFile(`/sys/block/${name}/${basename(node)}/dev`, 'utf8')).trim();
      const [major = '', minor = ''] = devno.split(':');
      await run('mknod', [node, 'b', major, minor]);
    }
  }
  return nodes;
}

async function waitFor(check: () => Promise<boolean>, attempts = 50): Promise<boolean> {
  for (let i = 0; i < attempts; i++) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

function runWithInput(program: string, args: string[], input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(program, args, (err) =>
      err ? reject(new Error(err.message, { cause: err })) : resolve(),
    );
    child.stdin?.end(input);
  });
}
