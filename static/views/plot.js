// Draw a Plotly figure dict from the API; the modebar's camera exports it as PNG.
export function drawFigure(element, figure, filename) {
  const layout = { ...(figure.layout || {}), autosize: true };
  delete layout.width;
  return window.Plotly.react(element, figure.data || [], layout, {
    responsive: true,
    displaylogo: false,
    toImageButtonOptions: { format: "png", filename, scale: 2 },
  });
}
