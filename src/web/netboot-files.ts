/**
 * The files a PXE fleet needs from this server, and whether they are here: the live-environment
 * trio (`bty-netboot-pc-x86_64-v<version>.{vmlinuz,initrd,squashfs}`, the names the iPXE scripts
 * chain) in the boot folder, and the iPXE boot files from Debian's `ipxe` package that firmware
 * loads over TFTP or HTTP. The dashboard's readiness list and the Netboot page read this.
 */
import { copyFile, link, mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';

export interface FileState {
  name: string;
  path: string;
  present: boolean;
  size: number | null;
  /** Last modification, ISO-8601 UTC. */
  modified: string | null;
}

/** The live-environment artifacts the iPXE scripts of `version` chain. */
export function liveArtifactNames(version: string): string[] {
  return ['vmlinuz', 'initrd', 'squashfs'].map((ext) => `bty-netboot-pc-x86_64-v${version}.${ext}`);
}

/** Where Debian's `ipxe` package puts its boot files. */
export const IPXE_DIR = '/usr/lib/ipxe';
/** BIOS over TFTP, UEFI (own drivers), UEFI (firmware's network driver). */
export const IPXE_BOOT_FILES = ['undionly.kpxe', 'ipxe.efi', 'snponly.efi'] as const;

async function stateOf(dir: string, name: string): Promise<FileState> {
  const path = join(dir, name);
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new Error('not a file');
    return { name, path, present: true, size: st.size, modified: st.mtime.toISOString() };
  } catch {
    return { name, path, present: false, size: null, modified: null };
  }
}

export function liveArtifacts(bootDir: string, version: string): Promise<FileState[]> {
  return Promise.all(liveArtifactNames(version).map((name) => stateOf(bootDir, name)));
}

export function ipxeBootFiles(dir: string = IPXE_DIR): Promise<FileState[]> {
  return Promise.all(IPXE_BOOT_FILES.map((name) => stateOf(dir, name)));
}

/**
 * Copies the regular files of `from` that `to` lacks into it (creating `to`), never replacing
 * one that is there: an operator's own build always wins. Only `names` when given. Each copy
 * lands under a temporary name first, so a crash never leaves a short file under the real one.
 * Returns the names copied; a missing `from` copies nothing.
 */
export async function copyMissing(
  from: string,
  to: string,
  names?: readonly string[],
): Promise<string[]> {
  let listed: string[];
  try {
    listed = names ? [...names] : await readdir(from);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  await mkdir(to, { recursive: true });
  const copied: string[] = [];
  for (const name of listed) {
    if (name.startsWith('.')) continue;
    const source = await stat(join(from, name)).catch(() => null);
    if (!source?.isFile()) continue;
    const target = join(to, name);
    if (await stat(target).catch(() => null)) continue;
    const temp = join(to, `.${name}.${process.pid}.copy`);
    await copyFile(join(from, name), temp);
    try {
      // link() refuses to replace: a file that appeared meanwhile stays as it is.
      await link(temp, target);
      copied.push(name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      await rm(temp, { force: true });
    }
  }
  return copied;
}
