import type { Register } from './command.ts';

export const registerInspect: Register = () => {};
