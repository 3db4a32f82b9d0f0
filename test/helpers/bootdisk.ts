/**
 * Tiny bootable disks for the QEMU boot tests, built from source at test time with Debian tools
 * (no root, no loop devices). Each one writes a marker string to COM1 and then halts, so a test
 * reading the serial log knows which disk booted and through which firmware.
 *
 * - `buildBiosDisk`: a raw image whose first sector is a 16-bit MBR boot sector (assembled with
 *   `nasm -f bin`, ending in 0x55AA). Reached by SeaBIOS, or by iPXE's `sanboot --drive 0x80`.
 * - `buildUefiDisk`: a GPT image with one EFI system partition (FAT made by `mkfs.vfat`, filled
 *   by mtools) holding `\EFI\BOOT\BOOTX64.EFI`, the removable-media path every UEFI firmware
 *   tries. The loader is a minimal PE32+ EFI application, also assembled with `nasm -f bin`.
 *
 * Tools and the Debian packages that ship them: nasm (nasm), mkfs.vfat (dosfstools), mmd and
 * mcopy (mtools), sfdisk (fdisk). A missing tool fails with the package's name.
 */
import { execFile } from 'node:child_process';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const MiB = 1024 * 1024;

/** Which Debian package provides each tool the disks are built with. */
export const DISK_TOOL_PACKAGES: Readonly<Record<string, string>> = {
  nasm: 'nasm',
  'mkfs.vfat': 'dosfstools',
  mmd: 'mtools',
  mcopy: 'mtools',
  sfdisk: 'fdisk',
};

/** Printable ASCII without quotes or backslashes: it goes into nasm string literals verbatim. */
const MARKER = /^[A-Za-z0-9 ._:+=-]{1,64}$/;

function checkMarker(marker: string): string {
  if (!MARKER.test(marker)) throw new Error(`unsuitable boot marker: ${JSON.stringify(marker)}`);
  return marker;
}

/**
 * Writes the bytes at `ds:si` (NUL-terminated) to the COM1 transmit register, polling the line
 * status register (0x3fd, bit 5: transmit holding register empty) before each byte. The UART
 * needs no set-up: QEMU's 16550 sends whatever reaches the register at any divisor.
 */
function biosBootSectorSource(marker: string): string {
  return `
bits 16
org 0x7c00
start:
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7c00
    cld
    mov si, message
.next:
    lodsb
    test al, al
    jz .halt
    mov bl, al
    mov dx, 0x3fd
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    mov dx, 0x3f8
    mov al, bl
    out dx, al
    jmp .next
.halt:
    hlt
    jmp .halt
message:
    db 13, 10, '${marker}', 13, 10, 0
    times 510 - ($ - $$) db 0
    dw 0xaa55
`;
}

/**
 * A minimal PE32+ image (subsystem 10, EFI application) with one section holding code and data.
 * The code is position-independent (RIP-relative only), so the image needs no relocations: the
 * relocation directory is empty and the "relocations stripped" flag stays clear, which lets
 * the firmware load it at any address.
 *
 * efi_main(ImageHandle in rcx, SystemTable in rdx), Microsoft x64 calling convention:
 * SystemTable->ConOut is at offset 64 (after the 24-byte table header, FirmwareVendor,
 * FirmwareRevision + padding, ConsoleInHandle, ConIn and ConsoleOutHandle), and
 * OutputString is the second member of EFI_SIMPLE_TEXT_OUTPUT_PROTOCOL (offset 8). Under OVMF
 * ConOut includes the serial terminal, so the UCS-2 marker reaches COM1 through the firmware's
 * console. The same marker is then written to COM1 directly (as the BIOS sector does), so it
 * reaches the log even with a firmware build whose ConOut has no serial terminal. The app never
 * returns: returning would send the firmware on to its next boot option.
 */
function efiAppSource(marker: string): string {
  return `
bits 64
default rel
FILE_ALIGN equ 0x200
SECTION_ALIGN equ 0x1000
TEXT_RVA equ 0x1000

dos_header:
    dw 'MZ'
    times 0x3c - ($ - $$) db 0
    dd pe_header - $$
pe_header:
    db 'PE', 0, 0
    dw 0x8664                   ; Machine: x86-64
    dw 1                        ; NumberOfSections
    dd 0, 0, 0                  ; TimeDateStamp, PointerToSymbolTable, NumberOfSymbols
    dw optional_end - optional  ; SizeOfOptionalHeader
    dw 0x0206                   ; executable image, no line numbers, no debug info
optional:
    dw 0x20b                    ; PE32+
    db 0, 0                     ; linker version
    dd text_file_size           ; SizeOfCode
    dd 0, 0                     ; SizeOfInitializedData, SizeOfUninitializedData
    dd TEXT_RVA                 ; AddressOfEntryPoint
    dd TEXT_RVA                 ; BaseOfCode
    dq 0x400000                 ; ImageBase
    dd SECTION_ALIGN, FILE_ALIGN
    dw 0, 0, 0, 0, 0, 0         ; OS, image and subsystem versions
    dd 0                        ; Win32VersionValue
    dd TEXT_RVA + ((text_size + SECTION_ALIGN - 1) / SECTION_ALIGN) * SECTION_ALIGN ; SizeOfImage
    dd FILE_ALIGN               ; SizeOfHeaders
    dd 0                        ; CheckSum
    dw 10                       ; Subsystem: EFI application
    dw 0                        ; DllCharacteristics
    dq 0x10000, 0x10000, 0x10000, 0x10000 ; stack and heap reserve/commit
    dd 0                        ; LoaderFlags
    dd 16                       ; NumberOfRvaAndSizes
    times 16 dq 0               ; data directories: no imports, no relocations
optional_end:
    db '.text', 0, 0, 0
    dd text_size                ; VirtualSize
    dd TEXT_RVA                 ; VirtualAddress
    dd text_file_size           ; SizeOfRawData
    dd FILE_ALIGN               ; PointerToRawData
    dd 0, 0                     ; relocations, line numbers
    dw 0, 0
    dd 0x60000020               ; code, execute, read
    times FILE_ALIGN - ($ - $$) db 0

text:
    sub rsp, 40                 ; shadow space, and 16-byte alignment for the call
    mov rcx, [rdx + 64]         ; SystemTable->ConOut
    lea rdx, [wide_message]
    call [rcx + 8]              ; ConOut->OutputString(ConOut, wide_message)
    lea rsi, [ascii_message]
.next:
    lodsb
    test al, al
    jz .halt
    mov bl, al
    mov dx, 0x3fd
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    mov dx, 0x3f8
    mov al, bl
    out dx, al
    jmp .next
.halt:
    hlt
    jmp .halt
wide_message:
    dw 13, 10
    dw __utf16__('${marker} (ConOut)')
    dw 13, 10, 0
ascii_message:
    db 13, 10, '${marker} (COM1)', 13, 10, 0
text_size equ $ - text
    align FILE_ALIGN, db 0
text_file_size equ $ - text
`;
}

/** A PATH that also has the sbin folders (mkfs.vfat and sfdisk live there). */
function toolPath(): string {
  const extra = ['/usr/local/sbin', '/usr/sbin', '/sbin'];
  const parts = (process.env.PATH ?? '').split(':').filter(Boolean);
  return [...parts, ...extra.filter((p) => !parts.includes(p))].join(':');
}

/** Runs a build tool; a missing program or a failure names the tool, its package and stderr. */
export function runTool(
  program: string,
  args: readonly string[],
  options: { input?: string; packages?: Readonly<Record<string, string>> } = {},
): Promise<string> {
  const packages = options.packages ?? DISK_TOOL_PACKAGES;
  return new Promise((resolve, reject) => {
    const child = execFile(
      program,
      args,
      { env: { ...process.env, PATH: toolPath(), MTOOLS_SKIP_CHECK: '1' }, timeout: 60_000 },
      (err, stdout) => {
        if (!err) return resolve(stdout);
        const pkg = packages[program];
        const hint = pkg ? ` (Debian package ${pkg}; \`make deps-test\` installs it)` : '';
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          return reject(new Error(`${program} is not installed${hint}`));
        }
        // execFile's message already carries the command line and stderr.
        reject(new Error(err.message));
      },
    );
    // A tool that exits without reading its input closes the pipe: that is its exit status's
    // business, not an uncaught EPIPE.
    child.stdin?.on('error', () => undefined);
    if (options.input === undefined) child.stdin?.end();
    else child.stdin?.end(options.input);
  });
}

async function assemble(dir: string, name: string, source: string): Promise<Buffer> {
  const src = join(dir, `${name}.asm`);
  const out = join(dir, `${name}.bin`);
  await writeFile(src, source);
  await runTool('nasm', ['-f', 'bin', '-o', out, src]);
  return readFile(out);
}

/** The 512-byte MBR boot sector that prints `marker` on COM1 and halts. */
export async function assembleBiosBootSector(dir: string, marker: string): Promise<Buffer> {
  const sector = await assemble(dir, 'bios-boot-sector', biosBootSectorSource(checkMarker(marker)));
  if (sector.length !== 512 || sector[510] !== 0x55 || sector[511] !== 0xaa) {
    throw new Error(`the boot sector is ${sector.length} bytes, not 512 ending in 0x55AA`);
  }
  return sector;
}

/** The EFI application (PE32+) that prints `marker` through ConOut and on COM1, then halts. */
export async function assembleEfiApp(dir: string, marker: string): Promise<Buffer> {
  const image = await assemble(dir, 'bootx64', efiAppSource(checkMarker(marker)));
  const peOffset = image.readUInt32LE(0x3c);
  if (
    image.toString('latin1', 0, 2) !== 'MZ' ||
    image.toString('latin1', peOffset, peOffset + 4) !== 'PE\0\0'
  ) {
    throw new Error('the EFI application is not a PE image');
  }
  return image;
}

/** A 1 MiB raw disk: the marker boot sector, then zeros. Returns the image's path. */
export async function buildBiosDisk(dir: string, marker: string): Promise<string> {
  const sector = await assembleBiosBootSector(dir, marker);
  const path = join(dir, 'bios-disk.img');
  const image = Buffer.alloc(MiB);
  sector.copy(image, 0);
  await writeFile(path, image);
  return path;
}

/** The EFI system partition's type GUID. */
const ESP_TYPE = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';

/**
 * A GPT disk (sparse file) with a 16 MiB EFI system partition at 1 MiB holding
 * `\EFI\BOOT\BOOTX64.EFI`. Returns the image's path.
 */
export async function buildUefiDisk(dir: string, marker: string): Promise<string> {
  const app = join(dir, 'BOOTX64.EFI');
  await writeFile(app, await assembleEfiApp(dir, marker));

  const espSize = 16 * MiB;
  const esp = join(dir, 'esp.img');
  await runTool('mkfs.vfat', ['-C', '-n', 'BTYESP', esp, String(espSize / 1024)]);
  await runTool('mmd', ['-i', esp, '::/EFI', '::/EFI/BOOT']);
  await runTool('mcopy', ['-i', esp, app, '::/EFI/BOOT/BOOTX64.EFI']);
  if ((await stat(esp)).size !== espSize)
    throw new Error('mkfs.vfat made an image of another size');

  const path = join(dir, 'uefi-disk.img');
  const start = MiB;
  const file = await open(path, 'w');
  try {
    // 1 MiB for the protective MBR and the primary GPT, 1 MiB at the end for the backup GPT.
    await file.truncate(start + espSize + MiB);
  } finally {
    await file.close();
  }
  await runTool('sfdisk', ['-q', path], {
    input: `label: gpt\nstart=${start / 512}, size=${espSize / 512}, type=${ESP_TYPE}, name="EFI system partition"\n`,
  });
  const disk = await open(path, 'r+');
  try {
    const bytes = await readFile(esp);
    await disk.write(bytes, 0, bytes.length, start);
  } finally {
    await disk.close();
  }
  return path;
}
