export type Toast = { id: number; text: string; tone: 'info' | 'success' | 'error' };

export const toasts = $state<{ list: Toast[] }>({ list: [] });
let next = 1;

export function notify(text: string, tone: Toast['tone'] = 'success', ms = 5000): void {
  const id = next++;
  toasts.list = [...toasts.list, { id, text, tone }];
  if (ms > 0) setTimeout(() => dismiss(id), ms);
}

export function dismiss(id: number): void {
  toasts.list = toasts.list.filter((t) => t.id !== id);
}
