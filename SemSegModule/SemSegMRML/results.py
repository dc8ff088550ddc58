"""What the Logic shows in Slicer: the metrics table with its IoU chart, and numbered where-to-paint points."""

from __future__ import annotations

import slicer
import vtk

METRICS_TABLE_NAME = "SemSeg metrics"
IOU_CHART_NAME = "SemSeg IoU chart"


def metrics_to_table(scene, metrics, table_node=None):
    """Per-class IoU, Dice and pixel counts, then a 'mean / accuracy' row, into a table node (reused by name).

    `metrics` is a SemSegLib.metrics result. Also makes sure the IoU chart over the table exists.
    """
    if table_node is None:
        table_node = scene.GetFirstNodeByName(METRICS_TABLE_NAME)
        if table_node is None or not table_node.IsA("vtkMRMLTableNode"):
            table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", METRICS_TABLE_NAME)
    table = table_node.GetTable()
    table.Initialize()
    columns = {"class": vtk.vtkStringArray(), "IoU": vtk.vtkDoubleArray(), "Dice": vtk.vtkDoubleArray(),
               "reference pixels": vtk.vtkDoubleArray(), "predicted pixels": vtk.vtkDoubleArray()}
    for name, array in columns.items():
        array.SetName(name)
    for row in metrics.to_dict()["classes"]:
        columns["class"].InsertNextValue(row["name"])
        columns["IoU"].InsertNextValue(row["iou"] if row["iou"] is not None else float("nan"))
        columns["Dice"].InsertNextValue(row["dice"] if row["dice"] is not None else float("nan"))
        columns["reference pixels"].InsertNextValue(row["reference_pixels"])
        columns["predicted pixels"].InsertNextValue(row["predicted_pixels"])
    columns["class"].InsertNextValue("mean / accuracy")
    columns["IoU"].InsertNextValue(metrics.mean_iou)
    columns["Dice"].InsertNextValue(metrics.mean_dice)
    columns["reference pixels"].InsertNextValue(float(metrics.confusion.sum()))
    columns["predicted pixels"].InsertNextValue(metrics.pixel_accuracy)
    for array in columns.values():
        table.AddColumn(array)
    table_node.Modified()
    iou_chart(scene, table_node)
    return table_node


def iou_chart(scene, table_node):
    """A bar chart of per-class IoU and Dice over the metrics table (shown by the widget); made once."""
    chart = scene.GetFirstNodeByName(IOU_CHART_NAME)
    if chart is None:
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", IOU_CHART_NAME)
        for column in ("IoU", "Dice"):
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"SemSeg {column}")
            series.SetAndObserveTableNodeID(table_node.GetID())
            series.SetXColumnName("class")
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        chart.SetTitle("SemSeg: per-class IoU and Dice")
        chart.SetYAxisRange(0, 1)
    return chart


def new_marker_list(scene, name: str):
    """A point list that does not become the active one for placing points with the mouse.

    Added in a batch: otherwise Slicer's Markups logic makes every new point list the active one, and the
    person's own points would land in this list.
    """
    scene.StartState(slicer.vtkMRMLScene.BatchProcessState)
    try:
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
        node.CreateDefaultDisplayNodes()
    finally:
        scene.EndState(slicer.vtkMRMLScene.BatchProcessState)
    return node


def mark_regions(node, volume, slice_index: int, regions) -> None:
    """Replace the points of `node` with one locked point per region (SemSegLib.suggest.UncertainRegion) on
    slice `slice_index` of `volume`, labeled 1, 2, ... in the order given (the most uncertain first)."""
    node.RemoveAllControlPoints()
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    node.SetAndObserveTransformNodeID(volume.GetTransformNodeID())  # same space as the volume's RAS
    for rank, region in enumerate(regions, start=1):
        # Array rows are the volume's J axis, columns its I axis.
        ras = ijk_to_ras.MultiplyPoint([region.column, region.row, slice_index, 1.0])
        n = node.AddControlPoint(ras[0], ras[1], ras[2], str(rank))
        node.SetNthControlPointDescription(
            n, f"slice {slice_index + 1}: uncertainty {region.mean_uncertainty:.2f} over {region.area} pixels")
    node.SetLocked(True)  # markers to look at, not to drag while painting
