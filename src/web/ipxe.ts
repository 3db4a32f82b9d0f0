/**
 * The iPXE scripts bty-web hands to booting machines: `/pxe-bootstrap.ipxe` and one script per
 * kind of `/pxe/{mac}` answer. Pure text in, text out (no I/O, no clock, no randomness), so the
 * tests compare whole scripts. The commands, their order and the kernel command line are
 * upstream's, byte for byte; the `#` comments are ours and only inform a human reading the
 * script (iPXE ignores them).
 *
 * How iPXE reads a script, and so what an interpolated value must never contain: lines end at
 * `\n` (a trailing `\r` is dropped, and a trailing `\` joins the next line, even on a comment
 * line); a line whose first word starts with `:` is a label; words are split on whitespace; a
 * word starting with `#` begins a comment; the words `&&`, `||` and `;` chain commands; and
 * `${...}` inside any word is expanded from iPXE settings.
 *
 * Every interpolated value is checked before use, in one of two ways:
 *
 * - **Rejected** (BTY_ERR_BAD_INPUT naming the field) when the value is part of a command or a
 *   URL: the MAC, the Host header, the artifact version, the sanboot drive, the image ref and the
 *   fallback reason. These have strict shapes, so anything else is corrupt data or an attack, and
 *   no replacement could be right: a "cleaned" drive or host would boot the wrong disk or fetch
 *   from the wrong server.
 * - **Neutralised** when the value is only shown to a person (a `#` comment line or the text of
 *   an `echo`): labels, the boot mode, the target disk serial and the image name. Every character
 *   outside a small safe set becomes `_`, which leaves no newline, `\`, `$`, `#`, `&`, `|`, `;`,
 *   quote or non-ASCII character behind. Refusing instead would leave a machine unable to boot
 *   because of a cosmetic string.
 */
import { isIPv6 } from 'node:net';
import { BtyError } from '../core/errors.ts';
import { normaliseMac } from '../core/mac.ts';
import { reprString } from '../core/python-repr.ts';

/** The BIOS drive a disk boot uses when the machine has none set (the first hard disk). */
export const DEFAULT_SANBOOT_DRIVE = '0x80';

/** Why a flash-mode machine is sent back to its firmware instead of the live environment. */
export type ExitFallbackReason = 'no_target_disk' | 'orphan_ref';

/** Chaining the live environment: where bty-web is and which release of its artifacts to boot. */
export interface LiveEnvScriptParams {
  /** The machine's MAC, any form `src/core/mac.ts` accepts; scripts carry the canonical form. */
  readonly mac: string;
  /** The request's Host header, verbatim (name, IPv4 or [IPv6], optional :port). */
  readonly host: string;
  /** The version in the live-environment artifact names (`bty-netboot-pc-x86_64-v<version>.*`). */
  readonly version: string;
}

/** The flash chain: the live-environment chain, with the binding summarised in its comments. */
export interface FlashScriptParams extends LiveEnvScriptParams {
  /** `bty_image_ref`: 64 lower-case hex digits. */
  readonly ref: string;
  /** `target_disk_serial` (display only). */
  readonly targetDiskSerial: string;
  /** The catalog entry's name (display only). */
  readonly imageName?: string | null;
}

/** What the disk-boot and exit-to-firmware scripts summarise about the machine. */
interface AssignmentSummary {
  readonly mac: string;
  /** The machine's `boot_mode` (display only). */
  readonly bootMode: string;
  /** `bty_image_ref` (64 lower-case hex digits), or null when none is bound. */
  readonly ref?: string | null;
  /** The machine's labels, shown in the order given (display only). */
  readonly labels?: readonly string[];
  /** `sanboot_drive`, `0x` and two lower-case hex digits; null means `0x80`. */
  readonly drive?: string | null;
}

/** Boot the local disk: `exit` to the firmware on UEFI, `sanboot` the BIOS drive otherwise. */
export type DiskBootScriptParams = AssignmentSummary;

/** Hand the machine back to its firmware boot order (flash mode that cannot flash). */
export interface ExitFallbackScriptParams extends AssignmentSummary {
  readonly reason: ExitFallbackReason;
}

/** No usable assignment: boot the first local disk after a longer pause. */
export interface UnknownScriptParams {
  readonly mac: string;
  /** The machine's `boot_mode`, if it has one (display only). */
  readonly bootMode?: string | null;
}

/** The parameters of each script kind. `ramboot` is deliberately absent (not in scope yet). */
export interface IpxeScriptParams {
  /** Chain the bty live environment (wizard, inventory, or a ramboot that fell back). */
  'live-env': LiveEnvScriptParams;
  /** Chain the bty live environment to flash the bound image (same commands as `live-env`). */
  flash: FlashScriptParams;
  /** Boot the local disk. */
  'disk-boot': DiskBootScriptParams;
  /** Return to the firmware boot order (no target disk, or the bound ref is not in the catalog). */
  'exit-fallback': ExitFallbackScriptParams;
  /** No usable assignment; boot the first local disk. */
  unknown: UnknownScriptParams;
}

export type IpxeScriptKind = keyof IpxeScriptParams;

/** A script to render, as a discriminated union on `kind` (what a boot decision returns). */
export type IpxeScript<K extends IpxeScriptKind = IpxeScriptKind> = {
  [P in K]: { readonly kind: P; readonly params: IpxeScriptParams[P] };
}[K];

const RENDERERS: { readonly [K in IpxeScriptKind]: (params: IpxeScriptParams[K]) => string } = {
  'live-env': renderLiveEnv,
  flash: renderFlash,
  'disk-boot': renderDiskBoot,
  'exit-fallback': renderExitFallback,
  unknown: renderUnknown,
};

export const IPXE_SCRIPT_KINDS = Object.keys(RENDERERS) as readonly IpxeScriptKind[];

/** The exact text of one `/pxe/{mac}` script; throws BTY_ERR_BAD_INPUT on an invalid value. */
export function renderIpxeScript<K extends IpxeScriptKind>(
  kind: K,
  params: IpxeScriptParams[K],
): string {
  if (!Object.hasOwn(RENDERERS, kind)) {
    throw badInput('kind', kind, `one of ${IPXE_SCRIPT_KINDS.join(', ')}`);
  }
  const render: (p: IpxeScriptParams[K]) => string = RENDERERS[kind];
  return render(params);
}

/** `/pxe-bootstrap.ipxe`: chain to this machine's `/pxe/<mac>` on the host the client used. */
export function renderBootstrapScript(host: string): string {
  const base = baseUrl(host);
  return script([
    '# bty-web bootstrap: ask bty-web what this machine should do next.',
    '# The URL reuses the Host this script was fetched from, so an IP address, a host name, a',
    '# .local name and a non-default port all loop back to the same server.',
    '# ${mac:hexhyp} is the MAC of the NIC that just did DHCP. A NIC-prefixed form (net0) would',
    '# read the EEPROM MAC of the first NIC even when it is unplugged, and a multi-NIC machine',
    '# would then ask about a MAC that has no assignment.',
    `chain ${base}/pxe/\${mac:hexhyp}`,
  ]);
}

/**
 * The Host header, checked for use in a URL: a host name (letters, digits, `-`, `_`, dots), a
 * dotted IPv4 address or a bracketed IPv6 address (no zone), then an optional `:port` (1-65535).
 * Returned verbatim: clients must loop back to exactly the name they used.
 */
export function sanitiseHost(raw: string): string {
  const match = /^(?<name>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?<port>[0-9]{1,5}))?$/.exec(raw);
  const name = match?.groups?.name;
  const port = match?.groups?.port;
  const nameOk = name !== undefined && (isBracketedIpv6(name) || isIpv4OrHostName(name));
  const portOk = port === undefined || (Number(port) >= 1 && Number(port) <= 65535);
  if (!nameOk || !portOk) {
    throw badInput(
      'host',
      raw,
      'a host name, an IPv4 address or a [bracketed] IPv6 address, with an optional :port',
    );
  }
  return raw;
}

// ---- script kinds ------------------------------------------------------------------------------

function renderLiveEnv(p: LiveEnvScriptParams): string {
  const mac = normaliseMac(p.mac);
  return script([
    `# bty-web: boot the bty live environment on ${mac}`,
    `# It asks bty-web for /pxe/${mac}/plan and does what the plan says.`,
    '',
    ...liveEnvChain(mac, p.host, p.version),
  ]);
}

function renderFlash(p: FlashScriptParams): string {
  const mac = normaliseMac(p.mac);
  const ref = checkRef(p.ref);
  const name = p.imageName ? [`#   image name:         ${displayText(p.imageName)}`] : [];
  return script([
    `# bty-web: flash ${mac} from the bty live environment`,
    `#   bty_image_ref:      ${ref}`,
    ...name,
    `#   target_disk_serial: ${displayOrNone(p.targetDiskSerial)}`,
    `# The image URL and the target disk come from /pxe/${mac}/plan, not from the kernel`,
    '# command line.',
    '',
    ...liveEnvChain(mac, p.host, p.version),
  ]);
}

function renderDiskBoot(p: DiskBootScriptParams): string {
  const mac = normaliseMac(p.mac);
  const summary = assignmentSummary(p);
  return script([
    `# bty-web: boot the local disk of ${mac} (boot_mode=${summary.mode})`,
    ...summary.lines,
    '# UEFI has no INT13 drive map, so sanboot cannot see the disk there: exit hands the boot',
    '# back to the firmware boot order. Legacy BIOS sanboots the BIOS drive number (not a Linux',
    '# disk serial) and falls back to the firmware boot order if that fails.',
    '',
    `echo bty: ${mac} boot_mode=${summary.mode}, booting local disk (platform=\${platform})`,
    'sleep 1',
    firmwareSplitDiskBoot(summary.drive),
  ]);
}

function renderExitFallback(p: ExitFallbackScriptParams): string {
  const mac = normaliseMac(p.mac);
  const summary = assignmentSummary(p);
  const reason = checkReason(p.reason);
  const shortRef = summary.ref === null ? 'none' : summary.ref.slice(0, 12);
  return script([
    `# bty-web: ${mac} cannot be flashed (${reason}); back to the firmware boot order`,
    ...summary.lines,
    '',
    `echo bty: ${mac} boot_mode=${summary.mode} ref=${shortRef}..., returning to local boot`,
    'sleep 1',
    'exit',
  ]);
}

function renderUnknown(p: UnknownScriptParams): string {
  const mac = normaliseMac(p.mac);
  return script([
    `# bty-web: no usable bty assignment for ${mac}`,
    `#   boot_mode: ${displayOrNone(p.bootMode)}`,
    `# Boots the local disk like a disk boot does, on the first BIOS disk (${DEFAULT_SANBOOT_DRIVE}).`,
    '',
    `echo no usable bty assignment for ${mac}; booting local disk (platform=\${platform})`,
    'sleep 5',
    firmwareSplitDiskBoot(DEFAULT_SANBOOT_DRIVE),
  ]);
}

// ---- shared pieces ------------------------------------------------------------------------------

/**
 * Kernel arguments after `boot=live fetch=... components`, each kept for a field lesson. There is
 * deliberately no `quiet`: the whole kernel and systemd log stays visible on every console.
 */
const LIVE_ENV_KERNEL_ARGS = [
  // The kernel writes to every console= entry. BMC serial-over-LAN bridges COM1 (Dell, iLO) or
  // COM2 (Supermicro, older Intel), so both UARTs are listed. Userspace /dev/console follows
  // the last entry: ttyS0 stays last so it lands on COM1, which the CI chain test captures.
  'console=tty0',
  'console=ttyS1,115200',
  'console=ttyS0,115200',
  // Early kernel messages reach COM1 even if the console order above ever regresses.
  'earlyprintk=ttyS0,115200',
  // plymouth-quit-wait hung forever on some iGPUs (Minisforum MS-01).
  'plymouth.enable=0',
  // nouveau wedges some iGPUs (MS-01, GMKTec G5). Supermicro/Aspeed BMCs expose an RNDIS "USB
  // virtual NIC" that live-boot picks first and then cannot fetch the squashfs through.
  'modprobe.blacklist=nouveau,rndis_host',
  'nouveau.modeset=0',
  // Keeps systemd from auto-mounting the partitions (ESP, root, home, swap) of the disk the
  // live environment is about to overwrite.
  'systemd.gpt_auto=0',
] as const;

/** The commands that boot the live environment (identical for every purpose). */
function liveEnvChain(mac: string, rawHost: string, rawVersion: string): string[] {
  const base = baseUrl(rawHost);
  const artifact = `\${bty-base}/boot/bty-netboot-pc-x86_64-v${checkVersion(rawVersion)}`;
  // The kernel and initrd URLs carry ?mac=: fetching them is bty-web's proof that this machine
  // booted the live environment, which arms the one-shot disk boot (without it PXE-first
  // firmware would reflash forever). The squashfs URL must stay untagged: live-boot derives a
  // local file name from it and aborts on `?` or `:` ("Unable to find a live file system on
  // the network"); the kernel fetch has already armed the bit.
  const kernelArgs = [
    `${artifact}.vmlinuz?mac=${mac}`,
    'boot=live',
    `fetch=${artifact}.squashfs`,
    'components',
    ...LIVE_ENV_KERNEL_ARGS,
    // The only bty knobs: everything else (image URL, target serial, format, mode) comes from
    // the plan, so the command line never goes stale.
    'bty.server=${bty-base}',
    `bty.mac=${mac}`,
  ];
  return [
    `set bty-base ${base}`,
    `kernel ${kernelArgs.join(' ')}`,
    `initrd ${artifact}.initrd?mac=${mac}`,
    'boot',
  ];
}

/** UEFI: `exit` to the firmware boot order. BIOS: sanboot the drive, else the same `exit`. */
function firmwareSplitDiskBoot(drive: string): string {
  return `iseq \${platform} efi && exit || sanboot --no-describe --drive ${drive} || exit`;
}

function assignmentSummary(p: AssignmentSummary): {
  mode: string;
  ref: string | null;
  drive: string;
  lines: string[];
} {
  const mode = displayText(p.bootMode);
  const ref = p.ref === null || p.ref === undefined ? null : checkRef(p.ref);
  const drive = checkDrive(p.drive);
  const labels = (p.labels ?? []).map(displayText).join(', ');
  return {
    mode,
    ref,
    drive,
    lines: [
      `#   image (ref):    ${ref ?? '(none)'}`,
      `#   labels:         ${labels || '(none)'}`,
      `#   boot_mode:      ${mode}`,
      `#   sanboot drive:  ${drive}`,
    ],
  };
}

/** `http://<host>`, the base of every URL in the scripts. */
function baseUrl(rawHost: string): string {
  return `http://${sanitiseHost(rawHost)}`;
}

/** A whole script: the `#!ipxe` signature, the lines, and a final newline. */
function script(lines: readonly string[]): string {
  return ['#!ipxe', ...lines].join('\n') + '\n';
}

// ---- validation and neutralisation -------------------------------------------------------------

const DRIVE = /^0x[0-9a-f]{2}$/;
const REF = /^[0-9a-f]{64}$/;
const VERSION = /^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$/;
const EXIT_FALLBACK_REASONS: readonly string[] = [
  'no_target_disk',
  'orphan_ref',
] satisfies ExitFallbackReason[];

function checkDrive(raw: string | null | undefined): string {
  if (raw === null || raw === undefined) return DEFAULT_SANBOOT_DRIVE;
  if (!DRIVE.test(raw)) {
    throw badInput('sanboot_drive', raw, 'a BIOS drive number: 0x and two lower-case hex digits');
  }
  return raw;
}

function checkRef(raw: string): string {
  if (!REF.test(raw)) throw badInput('bty_image_ref', raw, '64 lower-case hex digits');
  return raw;
}

function checkVersion(raw: string): string {
  if (!VERSION.test(raw)) {
    throw badInput('version', raw, 'letters, digits, ".", "_", "+" and "-" (like 0.70.1)');
  }
  return raw;
}

function checkReason(raw: string): ExitFallbackReason {
  if (!EXIT_FALLBACK_REASONS.includes(raw)) {
    throw badInput('reason', raw, EXIT_FALLBACK_REASONS.join(' or '));
  }
  return raw as ExitFallbackReason;
}

function isBracketedIpv6(name: string): boolean {
  return name.startsWith('[') && name.endsWith(']') && isIPv6(name.slice(1, -1));
}

/** Dotted digits must be a real IPv4 address; anything else must be a DNS-shaped host name. */
function isIpv4OrHostName(name: string): boolean {
  if (/^[0-9.]+$/.test(name)) {
    const parts = name.split('.');
    return parts.length === 4 && parts.every((p) => /^[0-9]{1,3}$/.test(p) && Number(p) <= 255);
  }
  const labels = (name.endsWith('.') ? name.slice(0, -1) : name).split('.');
  return (
    name.length <= 254 &&
    labels.every((l) => /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(l))
  );
}

/** Characters allowed through in display text; each other character becomes `_`. */
const DISPLAY_SAFE = /[A-Za-z0-9 .,:/_+=@()-]/;

/**
 * Text for a comment or an `echo`: only characters from DISPLAY_SAFE, so it cannot end a line,
 * continue one, start a comment, chain a command or expand a setting.
 */
function displayText(text: string): string {
  let out = '';
  for (const ch of text) out += DISPLAY_SAFE.test(ch) ? ch : '_';
  return out;
}

function displayOrNone(text: string | null | undefined): string {
  return text ? displayText(text) : '(none)';
}

function badInput(field: string, raw: unknown, expected: string): BtyError {
  const shown = typeof raw === 'string' ? reprString(raw) : String(raw);
  return new BtyError('BTY_ERR_BAD_INPUT', `invalid ${field}: ${shown} (expected ${expected})`, {
    details: { field },
  });
}
