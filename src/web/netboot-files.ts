/**
 * The files a PXE fleet needs from this server, and whether they are here: the live-environment
 * trio (`bty-netboot-pc-x86_64-v<version>.{vmlinuz,initrd,squashfs}`, the names the iPXE scripts
 * chain) in the boot folder, and the iPXE boot files from Debian's `ipxe` package that firmware
 * loads over TFTP or HTTP. The dashboard's readiness list and the Netboot page read this.
 */
import { stat } from 'node:fs/promises';
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
